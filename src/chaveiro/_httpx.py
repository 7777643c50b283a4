"""The httpx room: ``Auth`` flows for httpx, httpx2 and httpxyz, through the user's own client.

One generator, :meth:`HttpxAuth._plan`, holds every decision of a call: attach
the token, fetch one first if needed, renew and replay once when the API
refuses it. It yields instructions; :meth:`~HttpxAuth.sync_auth_flow` and
:meth:`~HttpxAuth.async_auth_flow` carry them out, blocking or awaiting. They
differ only in how they drive the token manager and read a body. With a fresh
token in hand (nearly every call), a short flow attaches it and hands over to
the plan's renewal only if the API refuses it.

The libraries share one ``Auth`` protocol: the class is made an ``Auth`` of
each as it is imported (:mod:`chaveiro._httpx_family`), and each call works
with the library of the request it is given. None of them is imported here.

The token request travels through the user's client (its transport, proxies,
TLS, hooks and timeouts apply), but never to any address other than
``token_url``: its body can be sent once only, and its ``trace`` extension
stops the client before it sends the request anywhere else, so a client that
follows redirects cannot carry the credentials to the redirect's target.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Generator
from contextlib import AsyncExitStack
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chaveiro._errors import TokenError
from chaveiro._httpx_dpop import HopProofs, prove
from chaveiro._httpx_family import family, join, library_of
from chaveiro._httpx_plan import (
    OURS,
    Advance,
    AsyncSteps,
    Closed,
    Instruction,
    Read,
    Start,
    Steps,
    TokenRequest,
)
from chaveiro._httpx_wire import (
    AsyncTrace,
    RedirectRefused,
    Trace,
    closed_by,
    closing_cause,
    one_shot,
)
from chaveiro._steps import CannotRetry, RawResponse, Send
from chaveiro._token import Token
from chaveiro._transport import RENEW, AuthCore, CappedBody, unreachable

if TYPE_CHECKING:
    import httpx
    import httpx2

    class _Family(httpx.Auth, httpx2.Auth):
        """What type checkers see: an ``Auth`` of both (joined at run time, see the docstring)."""

        def auth_flow(self, request: Any) -> Generator[Any, Any, None]: ...
        def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]: ...
        def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]: ...

else:
    _Family = object

__all__ = ["HttpxAuth"]


def _replayable(request: Any) -> bool:
    try:
        request.content  # noqa: B018 - raises for a streaming (generator) body
    except family("RequestNotRead"):
        return False
    return True


def _answered(response: Any, token: Token) -> bool:
    """True if ``response`` answered a request that carried ``token``.

    After a redirect to another host the final request carries no token: its
    401 says nothing about ours.
    """
    sent: str | None = response.request.headers.get("Authorization")
    return sent == token.authorization


@join
class HttpxAuth(AuthCore, _Family):
    """``Client(auth=auth)`` and ``AsyncClient(auth=auth)`` of httpx, httpx2 and httpxyz."""

    requires_request_body = False
    requires_response_body = False

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        token = self._warm_token(request)
        if token is not None:
            return self._warm(request, token)
        return self._drive(self._plan(request, asynchronous=False))

    def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        token = self._warm_token(request)
        if token is not None:
            return self._awarm(request, token)
        return self._adrive(self._plan(request, asynchronous=True))

    # ---- the hot path: a fresh token in hand ----------------------------------------------

    def _warm_token(self, request: Any) -> Token | None:
        """The token to attach at once, if one is fresh and the request's host may have it."""
        if self._hosts is not None and not self._applies(request.url.host):
            return None  # the plan passes the request on untouched
        return self._manager.fresh_token()

    def _warm(self, request: Any, token: Token) -> Generator[Any, Any, None]:
        """Attach ``token`` (and its DPoP proof); the plan takes over only if the answer
        calls for it."""
        request.headers["Authorization"] = token.authorization
        proof = None if self._dpop is None else prove(self, request, token, False)
        response = yield request
        if proof is not None or self._refused(response, token, request):
            follow_up = self._follow_up(request, response, token, proof, asynchronous=False)
            yield from self._drive(follow_up)

    async def _awarm(self, request: Any, token: Token) -> AsyncGenerator[Any, Any]:
        """The same as :meth:`_warm`, for an ``AsyncClient``."""
        request.headers["Authorization"] = token.authorization
        proof = None if self._dpop is None else prove(self, request, token, True)
        response = yield request
        if proof is None and not self._refused(response, token, request):
            return
        flow = self._adrive(self._follow_up(request, response, token, proof, asynchronous=True))
        reply: Any = None
        try:
            while True:
                try:
                    item = await flow.asend(reply)
                except StopAsyncIteration:
                    return
                try:
                    reply = yield item
                except GeneratorExit as exit_:  # httpx closes us: the renewal must know it
                    with contextlib.suppress(GeneratorExit, StopAsyncIteration):
                        await flow.athrow(exit_)
                    raise
        finally:
            await flow.aclose()

    async def _aget_token_through(self, client: Any) -> Token:
        """The current token, its token request sent through ``client``: an ``AsyncClient``."""
        library = library_of(client)
        obtained: list[Token] = []

        def plan() -> Generator[Instruction, Any, None]:
            token = yield from self._exchange(None, None, library, asynchronous=True)
            obtained.append(token)

        async with AsyncExitStack() as stack:
            flow = self._adrive(plan())
            stack.push_async_callback(flow.aclose)
            reply: Any = None
            error: Exception | None = None
            while True:
                try:
                    request = await (flow.athrow(error) if error else flow.asend(reply))
                except StopAsyncIteration:
                    return obtained[0]
                reply, error = None, None
                try:
                    # Not through the client's auth (it may be us), nor on to a redirect.
                    reply = await client.send(
                        request, stream=True, auth=None, follow_redirects=False
                    )
                except Exception as exc:  # noqa: BLE001 - the plan tells what it means
                    error = exc
                else:
                    stack.push_async_callback(reply.aclose)

    # ---- the plan: every decision of one call, for both drivers -------------------------------

    def _plan(self, request: Any, *, asynchronous: bool) -> Generator[Instruction, Any, None]:
        if self._hosts is not None and not self._applies(request.url.host):
            yield request
            return
        token = self._manager.fresh_token()
        if token is None:
            library = library_of(request)
            token = yield from self._exchange(request, None, library, asynchronous=asynchronous)
        request.headers["Authorization"] = token.authorization
        proof = None if self._dpop is None else prove(self, request, token, asynchronous)
        response = yield request
        yield from self._follow_up(request, response, token, proof, asynchronous=asynchronous)

    def _refused(self, response: Any, token: Token, request: Any) -> bool:
        """True if ``response`` refused ``token`` and ``request`` can be sent again."""
        return (
            self._renews(response.status_code)
            and _answered(response, token)
            and _replayable(request)
        )

    def _follow_up(
        self, request: Any, response: Any, token: Token, proof: str | None, *, asynchronous: bool
    ) -> Generator[Instruction, Any, None]:
        """Send ``request`` again when its ``response`` calls for it (:meth:`AuthCore._after`).

        A DPoP nonce challenge: once more, with a new proof. A refused ``token``:
        renew it (once for all callers) and send once more. At most one of each.
        """
        library = library_of(request)
        nonce_retried = renewed = False
        while True:
            step = self._after(
                str(request.url),
                response.status_code,
                response.headers,
                proof,
                nonce_retried=nonce_retried,
                renewed=renewed,
            )
            if step is None or not _answered(response, token) or not _replayable(request):
                return
            yield Read(response, capped=False)  # frees its connection meanwhile
            if step == RENEW:
                stale = token.access_token
                fresh = yield from self._exchange(
                    request, stale, library, asynchronous=asynchronous
                )
                if fresh.access_token == stale:
                    return
                renewed, token = True, fresh
                self._replayed(token)
                request.headers["Authorization"] = token.authorization
            else:
                nonce_retried = True
            proof = None if self._dpop is None else prove(self, request, token, asynchronous)
            response = yield request

    def _exchange(
        self, user_request: Any, stale: str | None, library: ModuleType, *, asynchronous: bool
    ) -> Generator[Instruction, Any, Token]:
        """Obtain a token, sending token requests through the user's own client."""
        url = self._settings.token_url
        failures: tuple[type[BaseException], ...] = (RedirectRefused, *family("TransportError"))
        failed: tuple[type[BaseException], ...] = (TokenError, *failures)
        item = yield Start(stale)
        while isinstance(item, Send):
            token_request = self._to_httpx(item, user_request, library, asynchronous=asynchronous)
            try:
                response = yield TokenRequest(token_request)
            except Closed as closed:  # the user's client failed and ends the call
                cause = closing_cause(closed.exit, token_request)
                error = closed_by(cause, token_request, self.dialect, url, self._manager.clock())
                if error is None:
                    raise
                try:
                    yield Advance(error=CannotRetry(error))  # the flow records the failure
                except TokenError as final:
                    raise final from cause
                raise error from cause
            except failures as exc:  # _aget_token_through's own send
                now = self._manager.clock()
                error = closed_by(exc, token_request, self.dialect, url, now)
                item = yield Advance(error=error or unreachable(url, exc))
                continue
            try:
                body = yield Read(response)
            except failed as exc:
                error = exc if isinstance(exc, TokenError) else unreachable(url, exc)
                item = yield Advance(error=error)
            else:
                item = yield Advance(RawResponse(response.status_code, response.headers, body))
        assert isinstance(item, Token)
        return item

    def _to_httpx(
        self, send: Send, user_request: Any, library: ModuleType, *, asynchronous: bool
    ) -> Any:
        """The token request for ``library``, with the user's timeouts cut to the time left."""
        request = send.request
        token_request = library.Request(
            request.method, request.url, headers=list(request.headers), content=request.body
        )
        token_request.stream = one_shot(library, request.body)  # readable by hooks; sent once
        connect, read = self._timeout
        mine = {"connect": connect, "read": read, "write": read, "pool": connect}
        theirs = user_request.extensions.get("timeout") if user_request is not None else None
        limits = theirs if isinstance(theirs, dict) else mine
        token_request.extensions["timeout"] = {
            phase: send.timeout if limits.get(phase) is None else min(limits[phase], send.timeout)
            for phase in mine
        }
        user_trace = user_request.extensions.get("trace") if user_request is not None else None
        if isinstance(user_trace, HopProofs):  # a replay's: its proofs are not for this request
            user_trace = user_trace.user_trace
        tracer = AsyncTrace if asynchronous else Trace
        token_request.extensions["trace"] = tracer(library, token_request.url, user_trace)
        return token_request

    # ---- the two drivers: blocking and awaiting -----------------------------------------------

    def _drive(self, plan: Generator[Instruction, Any, None]) -> Generator[Any, Any, None]:
        steps: Steps | None = None
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    item = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration:
                    return
                except Closed as closed:
                    raise closed.exit from None
                reply, error = None, None
                try:
                    if not isinstance(item, OURS):
                        reply = yield item  # closed here: nothing of ours is out
                    elif isinstance(item, TokenRequest):
                        try:
                            reply = yield item.request
                        except GeneratorExit as exit_:
                            error = Closed(exit_)
                    elif isinstance(item, Read):
                        response = item.response
                        url = self._settings.token_url
                        body = CappedBody(url, response.headers, capped=item.capped)
                        for chunk in response.iter_bytes():
                            body.add(chunk)
                        reply = response._content = body.body()  # user hooks may read it
                    else:
                        steps = steps or Steps(self._manager, self._cache)
                        reply = steps.do(item)
                except Exception as exc:  # noqa: BLE001 - handed to the plan
                    error = exc
        finally:
            if steps is not None:
                steps.close()
            plan.close()

    async def _adrive(self, plan: Generator[Instruction, Any, None]) -> AsyncGenerator[Any, Any]:
        steps: AsyncSteps | None = None
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    item = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration:
                    return
                except Closed as closed:
                    raise closed.exit from None
                reply, error = None, None
                try:
                    if not isinstance(item, OURS):
                        reply = yield item  # closed here: nothing of ours is out
                    elif isinstance(item, TokenRequest):
                        try:
                            reply = yield item.request
                        except GeneratorExit as exit_:
                            error = Closed(exit_)
                    elif isinstance(item, Read):
                        response = item.response
                        url = self._settings.token_url
                        body = CappedBody(url, response.headers, capped=item.capped)
                        async for chunk in response.aiter_bytes():
                            body.add(chunk)
                        reply = response._content = body.body()  # user hooks may read it
                    else:
                        steps = steps or AsyncSteps(self._manager, self._cache)
                        reply = await steps.do(item)
                except Exception as exc:  # noqa: BLE001 - handed to the plan
                    error = exc
        finally:
            if steps is not None:
                await steps.aclose()
            plan.close()
