"""The aiohttp room: the auth object as an aiohttp client middleware (aiohttp >= 3.12).

``aiohttp.ClientSession(middlewares=(auth,))``, or ``middlewares=(auth,)`` on one
request: aiohttp calls ``auth(request, handler)``, which returns the coroutine
of :meth:`AiohttpMiddleware._middleware`. asyncio only, as aiohttp itself.

The token request goes through the same session (its connector, TLS settings,
proxy and trace configs apply) with ``middlewares=()``, so it never passes
through this middleware again; it follows no redirect, its body is read up to
the 1 MiB cap, and its timeouts are cut to what is left of the deadline.

aiohttp runs the middlewares again for every redirect hop, each hop a new
request. A hop gets the token only if it goes to the origin of the request the
user made: the session call's first hop. Hops of one call share one timer
object (``ClientRequest._timer``, one per session call since aiohttp 3.12),
which links a hop to the call's first origin, kept in a context variable of the
task. Should a later aiohttp drop that attribute, any request that follows a
redirect answer in the same task counts as its hop: at worst a token is
withheld, never sent elsewhere.

aiohttp is imported only when a token request or a replay needs it: ``import
chaveiro`` never loads it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chaveiro._errors import ConfigurationError
from chaveiro._steps import RawResponse, Send, obtain_async
from chaveiro._token import Token
from chaveiro._transport import RENEW, AuthCore, CappedBody, unreachable

if TYPE_CHECKING:
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientSession
    from aiohttp import ClientTimeout as _ClientTimeout
    from yarl import URL

__all__ = ["AiohttpMiddleware"]

_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_UNKNOWN = object()
"""The call of a request when aiohttp does not tell: any redirect's next hop in the task."""


@dataclass(frozen=True, slots=True)
class _Redirected:
    """A request of session call ``call``, which started at ``origin``, was answered 3xx."""

    call: object
    origin: URL


_REDIRECTED: contextvars.ContextVar[_Redirected | None] = contextvars.ContextVar(
    "chaveiro_aiohttp_redirected", default=None
)


def _call_of(request: ClientRequest) -> object:
    """What the hops of one session call share: its timer (one per call)."""
    return getattr(request, "_timer", _UNKNOWN)


class AiohttpMiddleware(AuthCore):
    """``aiohttp.ClientSession(middlewares=(auth,))``: the token on every request it may go to."""

    async def _middleware(
        self, request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        """``auth(request, handler)``: what aiohttp awaits for every request and redirect hop."""
        redirected = _REDIRECTED.get()
        origin = None
        if redirected is not None and redirected.call is _call_of(request):
            origin = redirected.origin  # a redirect hop: the call started there
        if (origin is None or origin == request.url.origin()) and (
            self._hosts is None or self._applies(request.url.host)
        ):
            token = self._manager.fresh_token() or await self._aobtain(request, None)
            request.headers["Authorization"] = token.authorization
            proof = None
            if self._dpop is not None:
                proof = self._proof(request.method, str(request.url), token)
                if proof is not None:
                    request.headers["DPoP"] = proof
            response = await handler(request)
            if proof is not None or (self.replay_on_401 and response.status in self._renew_on):
                response = await self._resend(request, handler, response, token, proof)
        else:
            response = await handler(request)
        if response.status in _REDIRECTS and (
            "Location" in response.headers or "URI" in response.headers
        ):
            # aiohttp may follow it, calling us again for the next hop
            call = _call_of(request)
            _REDIRECTED.set(_Redirected(call, origin or request.url.origin()))
        elif redirected is not None:
            _REDIRECTED.set(None)
        return response

    async def _resend(
        self,
        request: ClientRequest,
        handler: ClientHandlerType,
        answer: ClientResponse,
        token: Token,
        proof: str | None,
    ) -> ClientResponse:
        """Send ``request`` again when its ``answer`` calls for it (:meth:`AuthCore._after`).

        A DPoP nonce challenge: once more with a new proof. A refused ``token``:
        renew it (once for all callers) and send once more. At most one of each.
        """
        url = str(request.url)
        nonce_retried = renewed = False
        while True:
            step = self._after(
                url,
                answer.status,
                answer.headers,
                proof,
                nonce_retried=nonce_retried,
                renewed=renewed,
            )
            if step is None or not _replayable(request):
                return answer
            await answer.read()  # still readable by the caller; the connection goes back
            if step == RENEW:
                renewed_token = await self._aobtain(request, token.access_token)
                if renewed_token.access_token == token.access_token:
                    return answer
                renewed, token = True, renewed_token
                self._replayed(token)
                request.headers["Authorization"] = token.authorization
            else:
                nonce_retried = True
            answer.release()
            proof = self._proof(request.method, url, token)
            if proof is not None:
                request.headers["DPoP"] = proof
            answer = await handler(request)

    # ---- the token request ----------------------------------------------------------------

    async def _aobtain(self, request: ClientRequest, stale: str | None) -> Token:
        """Run the token flow, sending token requests through ``request``'s session."""
        flow = self._manager.flow(stale)
        proxy = _proxy_of(request, self._settings.token_url)
        send = partial(self._send_aiohttp, request.session, proxy)
        return await obtain_async(flow, self._cache, send)

    async def _send_aiohttp(
        self, session: ClientSession, proxy: Mapping[str, Any], send: Send
    ) -> RawResponse:
        import asyncio  # noqa: PLC0415 - already loaded: aiohttp runs on asyncio

        import aiohttp  # noqa: PLC0415 - loaded when a token request is sent, not at import

        request = send.request
        url = request.url
        headers = dict(request.headers)
        if session.auth is not None and "Authorization" in headers:
            raise ConfigurationError(
                "The aiohttp session has auth= set, and the token request carries its own"
                " Authorization header: aiohttp refuses both. Remove auth= from the session"
                " (chaveiro authenticates its requests), or use auth_method='client_secret_post'."
            )
        try:
            async with session.request(
                request.method,
                url,
                headers=headers,
                data=request.body,
                allow_redirects=False,  # credentials go to token_url and nowhere else
                middlewares=(),  # not through us (nor the user's middlewares) again
                raise_for_status=False,  # an error answer is ours to read
                timeout=self._client_timeout(session.timeout, send.timeout),
                **proxy,
            ) as response:
                body = CappedBody(url, response.headers)
                async for chunk in response.content.iter_any():
                    body.add(chunk)
                return RawResponse(response.status, response.headers, body.body())
        # asyncio.TimeoutError: the builtin TimeoutError only from Python 3.11 on.
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise unreachable(url, exc) from None

    def _client_timeout(self, theirs: _ClientTimeout, left: float) -> _ClientTimeout:
        """The session's timeouts and ours (``timeout=``), each cut to ``left`` seconds."""
        import aiohttp  # noqa: PLC0415 - only on the token request path

        connect, read = self._timeout

        def cut(*limits: float | None) -> float:
            return min(limit for limit in (*limits, left) if limit)  # None or 0: no limit

        return aiohttp.ClientTimeout(
            total=cut(theirs.total),
            connect=cut(theirs.connect, connect),
            sock_connect=cut(theirs.sock_connect, connect),
            sock_read=cut(theirs.sock_read, read),
        )


def _proxy_of(request: ClientRequest, token_url: str) -> dict[str, Any]:
    """The proxy of the API ``request``, for the token request it needs.

    The token request goes where the API request goes: through the proxy that
    aiohttp chose for it (a per-request ``proxy=``, the session's, or the
    environment's with ``trust_env=True``), unless the environment's
    ``NO_PROXY`` names the token endpoint's host. Without a proxy on the API
    request, the session decides for the token URL as it would for any URL.
    """
    if request.proxy is None:
        return {}
    from urllib.request import proxy_bypass  # noqa: PLC0415 - with a proxy only

    if request.session.trust_env and proxy_bypass(urlsplit(token_url).hostname or ""):
        return {}
    return {
        "proxy": request.proxy,
        "proxy_auth": request.proxy_auth,
        "proxy_headers": request.proxy_headers,
    }


def _replayable(request: ClientRequest) -> bool:
    """True if ``request``'s body can be sent again as it was the first time."""
    body = request.body
    if isinstance(body, bytes):  # no body at all
        return True
    consumed = getattr(body, "consumed", None)
    if consumed is None:  # aiohttp 3.12.0: no payload tells; bytes alone are safe
        from aiohttp.payload import BytesPayload  # noqa: PLC0415 - only on a refused request

        return isinstance(body, BytesPayload)
    return not consumed
