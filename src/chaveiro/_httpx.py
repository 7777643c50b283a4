"""The httpx room: ``httpx.Auth`` flows that send token requests through the user's own client.

One generator, :meth:`HttpxAuth._plan`, holds every decision of a call: attach
the token, fetch one first if needed, renew and replay once when the API
refuses it. It yields instructions; :meth:`~HttpxAuth.sync_auth_flow` and
:meth:`~HttpxAuth.async_auth_flow` carry them out, blocking or awaiting. They
differ only in how they drive the token manager and read a body.

The token request travels through the user's client (its transport, proxies,
TLS, hooks and timeouts apply), but never to any address other than
``token_url``: its body can be sent once only, and its ``trace`` extension
stops the client before it sends the request anywhere else, so a client that
follows redirects cannot carry the credentials to the redirect's target.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from chaveiro._errors import TokenError
from chaveiro._httpx_wire import (
    AsyncTrace,
    OneShot,
    RedirectRefused,
    Trace,
    closed_by,
    closing_cause,
)
from chaveiro._steps import CannotRetry, RawResponse, Send, run_async, run_sync
from chaveiro._token import Token
from chaveiro._transport import AuthCore, CappedBody, unreachable

__all__ = ["HttpxAuth"]


# ---- instructions from the plan to the two drivers -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Start:
    """Start a token flow (``stale``: the access token the API refused); reply: its first item."""

    stale: str | None


@dataclass(frozen=True, slots=True)
class _Advance:
    """Give the token flow ``value`` (or throw ``error`` into it); reply: its next item."""

    value: RawResponse | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    """Read ``response``'s body, up to the cap when ``capped``; reply: the bytes."""

    response: httpx.Response
    capped: bool = True


@dataclass(frozen=True, slots=True)
class _TokenRequest:
    """Send our token ``request`` through the user's client; reply: its response."""

    request: httpx.Request


_Instruction = httpx.Request | _TokenRequest | _Start | _Advance | _Read
"""A bare request is the user's own; a close of the flow while it is out needs no telling."""


class _Closed(Exception):  # noqa: N818 - never leaves this module
    """httpx closed the flow while a request was out: its ``GeneratorExit``, carried to the plan.

    A ``GeneratorExit`` thrown into a generator that delegates with ``yield
    from`` closes the inner one without telling it why; this one reaches it.
    """

    def __init__(self, exit_: GeneratorExit) -> None:
        super().__init__()
        self.exit = exit_


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises for a streaming (generator) body
    except httpx.RequestNotRead:
        return False
    return True


def _answered(response: httpx.Response, token: Token) -> bool:
    """True if ``response`` answered a request that carried ``token``.

    After a redirect to another host the final request carries no token: its
    401 says nothing about ours.
    """
    sent: str | None = response.request.headers.get("Authorization")
    return sent == token.authorization


class HttpxAuth(AuthCore, httpx.Auth):
    """``httpx.Client(auth=auth)`` and ``httpx.AsyncClient(auth=auth)``."""

    requires_request_body = False
    requires_response_body = False

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        return self._drive(self._plan(request, asynchronous=False))

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._adrive(self._plan(request, asynchronous=True))

    async def aget_token(self, *, client: httpx.AsyncClient | None = None) -> Token:
        """The current token, fetched or renewed if needed (asyncio or trio).

        The token request is sent with ``client`` when given (its TLS settings,
        proxies and transport apply), else with a short-lived client of our own.
        """
        token = self._manager.fresh_token()
        if token is not None:
            return token
        obtained: list[Token] = []

        def plan() -> Generator[_Instruction, Any, None]:
            obtained.append((yield from self._exchange(None, None, asynchronous=True)))

        async with AsyncExitStack() as stack:
            if client is None:
                verify = True if self._tls is None else self._tls.ssl_context
                client = await stack.enter_async_context(httpx.AsyncClient(verify=verify))
            flow = self._adrive(plan())
            stack.push_async_callback(flow.aclose)
            reply: httpx.Response | None = None
            error: Exception | None = None
            while True:
                try:
                    request = await (flow.athrow(error) if error else flow.asend(reply))  # type: ignore[arg-type]
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

    def _plan(
        self, request: httpx.Request, *, asynchronous: bool
    ) -> Generator[_Instruction, Any, None]:
        if self._hosts is not None and not self._applies(request.url.host):
            yield request
            return
        token = self._manager.fresh_token()
        if token is None:
            token = yield from self._exchange(request, None, asynchronous=asynchronous)
        request.headers["Authorization"] = token.authorization
        response = yield request
        if (
            not self._renews(response.status_code)
            or not _answered(response, token)
            or not _replayable(request)
        ):
            return
        yield _Read(response, capped=False)  # frees its connection while we wait for a token
        renewed = yield from self._exchange(request, token.access_token, asynchronous=asynchronous)
        if renewed.access_token == token.access_token:
            return
        self._replayed(renewed)
        request.headers["Authorization"] = renewed.authorization
        yield request

    def _exchange(
        self, user_request: httpx.Request | None, stale: str | None, *, asynchronous: bool
    ) -> Generator[_Instruction, Any, Token]:
        """Obtain a token, sending token requests through the user's own client."""
        url = self._settings.token_url
        item = yield _Start(stale)
        while isinstance(item, Send):
            token_request = self._to_httpx(item, user_request, asynchronous=asynchronous)
            try:
                response = yield _TokenRequest(token_request)
            except _Closed as closed:  # the user's client failed and ends the call
                cause = closing_cause(closed.exit, token_request)
                error = closed_by(cause, token_request, self.dialect, url, self._manager.clock())
                if error is None:
                    raise
                try:
                    yield _Advance(error=CannotRetry(error))  # the flow records the failure
                except TokenError as final:
                    raise final from cause
                raise error from cause
            except (httpx.TransportError, RedirectRefused) as exc:  # aget_token's own send
                now = self._manager.clock()
                error = closed_by(exc, token_request, self.dialect, url, now)
                item = yield _Advance(error=error or unreachable(url, exc))
                continue
            try:
                body = yield _Read(response)
            except (TokenError, httpx.TransportError) as exc:
                error = exc if isinstance(exc, TokenError) else unreachable(url, exc)
                item = yield _Advance(error=error)
            else:
                item = yield _Advance(RawResponse(response.status_code, response.headers, body))
        assert isinstance(item, Token)
        return item

    def _to_httpx(
        self, send: Send, user_request: httpx.Request | None, *, asynchronous: bool
    ) -> httpx.Request:
        """The token request for httpx, with the user's timeouts cut to the time left."""
        request = send.request
        token_request = httpx.Request(
            request.method, request.url, headers=list(request.headers), content=request.body
        )
        token_request.stream = OneShot(request.body)  # readable by hooks; sent once only
        connect, read = self._timeout
        mine = {"connect": connect, "read": read, "write": read, "pool": connect}
        theirs = user_request.extensions.get("timeout") if user_request is not None else None
        limits = theirs if isinstance(theirs, dict) else mine
        token_request.extensions["timeout"] = {
            phase: send.timeout if limits.get(phase) is None else min(limits[phase], send.timeout)
            for phase in mine
        }
        user_trace = user_request.extensions.get("trace") if user_request is not None else None
        tracer = AsyncTrace if asynchronous else Trace
        token_request.extensions["trace"] = tracer(token_request.url, user_trace)
        return token_request

    # ---- the two drivers: blocking and awaiting -----------------------------------------------

    def _drive(
        self, plan: Generator[_Instruction, Any, None]
    ) -> Generator[httpx.Request, httpx.Response, None]:
        steps: _Steps | None = None
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    item = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration:
                    return
                except _Closed as closed:
                    raise closed.exit from None
                reply, error = None, None
                try:
                    if isinstance(item, httpx.Request):
                        reply = yield item  # closed here: nothing of ours is out
                    elif isinstance(item, _TokenRequest):
                        try:
                            reply = yield item.request
                        except GeneratorExit as exit_:
                            error = _Closed(exit_)
                    elif isinstance(item, _Read):
                        response = item.response
                        url = self._settings.token_url
                        body = CappedBody(url, response.headers, capped=item.capped)
                        for chunk in response.iter_bytes():
                            body.add(chunk)
                        reply = response._content = body.body()  # user hooks may read it
                    else:
                        steps = steps or _Steps(self)
                        reply = steps.do(item)
                except Exception as exc:  # noqa: BLE001 - handed to the plan
                    error = exc
        finally:
            if steps is not None:
                steps.close()
            plan.close()

    async def _adrive(
        self, plan: Generator[_Instruction, Any, None]
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        steps: _AsyncSteps | None = None
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    item = plan.throw(error) if error is not None else plan.send(reply)
                except StopIteration:
                    return
                except _Closed as closed:
                    raise closed.exit from None
                reply, error = None, None
                try:
                    if isinstance(item, httpx.Request):
                        reply = yield item  # closed here: nothing of ours is out
                    elif isinstance(item, _TokenRequest):
                        try:
                            reply = yield item.request
                        except GeneratorExit as exit_:
                            error = _Closed(exit_)
                    elif isinstance(item, _Read):
                        response = item.response
                        url = self._settings.token_url
                        body = CappedBody(url, response.headers, capped=item.capped)
                        async for chunk in response.aiter_bytes():
                            body.add(chunk)
                        reply = response._content = body.body()  # user hooks may read it
                    else:
                        steps = steps or _AsyncSteps(self)
                        reply = await steps.do(item)
                except Exception as exc:  # noqa: BLE001 - handed to the plan
                    error = exc
        finally:
            if steps is not None:
                await steps.aclose()
            plan.close()


class _Steps:
    """Carries out :class:`_Start` and :class:`_Advance` with the blocking token-flow driver."""

    def __init__(self, auth: HttpxAuth) -> None:
        self.auth = auth
        self.driver: Generator[Any, Any, None] | None = None

    def do(self, item: _Start | _Advance) -> Any:
        if isinstance(item, _Start):
            self.close()
            manager = self.auth._manager
            self.driver = run_sync(manager.flow(item.stale), self.auth._cache)
            return next(self.driver)
        assert self.driver is not None
        if item.error is not None:
            return self.driver.throw(item.error)
        return self.driver.send(item.value)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()


class _AsyncSteps:
    """The same as :class:`_Steps`, awaiting (asyncio or trio)."""

    def __init__(self, auth: HttpxAuth) -> None:
        self.auth = auth
        self.driver: AsyncGenerator[Any, Any] | None = None

    async def do(self, item: _Start | _Advance) -> Any:
        if isinstance(item, _Start):
            await self.aclose()
            manager = self.auth._manager
            self.driver = run_async(manager.flow(item.stale), self.auth._cache)
            return await self.driver.asend(None)
        assert self.driver is not None
        if item.error is not None:
            return await self.driver.athrow(item.error)
        return await self.driver.asend(item.value)

    async def aclose(self) -> None:
        if self.driver is not None:
            await self.driver.aclose()
