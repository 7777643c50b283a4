"""How chaveiro's token request travels through a user's httpx client.

It goes to ``token_url`` and nowhere else: its body can be sent once only, and
its ``trace`` extension stops the client before it sends the request to any
other address, so a client that follows redirects cannot carry credentials to
a redirect's target. When the client fails and ends the call, the trace and
the closing exception tell why, as one of our typed errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

from chaveiro._dialect import Dialect, parse_response
from chaveiro._errors import TokenError
from chaveiro._transport import unreachable

__all__ = ["AsyncTrace", "OneShot", "RedirectRefused", "Trace", "closed_by", "closing_cause"]


class RedirectRefused(Exception):  # noqa: N818 - never leaves chaveiro
    """Raised by the token request's trace before it is sent to another address."""


class OneShot(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A request body that can be sent once: a redirect cannot send the credentials on."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def _take(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise RedirectRefused
        return body

    def __iter__(self) -> Iterator[bytes]:
        yield self._take()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._take()


def _where(url: httpx.URL) -> tuple[str, str, int | None, str]:
    """Scheme, host, port and path of ``url``: what a request must match to be ours."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port, url.path


class Trace:
    """httpcore's ``trace`` request extension on our token request.

    It refuses to let the request go to any address but ``token_url``, and it
    remembers why the request failed and what the endpoint answered: httpx
    closes the auth flow when the request fails, and a closed async generator
    is not told why. Events go on to the user's own ``trace``, if their request
    had one.
    """

    def __init__(self, url: httpx.URL, user_trace: Any) -> None:
        self.url = url
        self.error: BaseException | None = None
        self.answer: tuple[int, dict[str, str]] | None = None
        """Status and headers of the last answer, once they arrived."""
        self._user_trace = user_trace

    def _record(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            target = getattr(info.get("request"), "url", None)
            if target is not None and not self._same(target):
                self.error = RedirectRefused()
                raise self.error
        error = info.get("exception")
        if self.error is None and event.endswith(".failed") and isinstance(error, Exception):
            self.error = error
        if event.endswith("receive_response_headers.complete"):
            answer = info.get("return_value")
            # HTTP/1.1: (version, status, reason, headers); HTTP/2: (status, headers)
            if isinstance(answer, tuple) and len(answer) in (2, 4):
                status, headers = answer[-3 if len(answer) == 4 else 0], answer[-1]
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    self.answer = (
                        int(status),
                        {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                    )

    def _same(self, target: Any) -> bool:
        """True if httpcore's ``target`` URL is our token URL (scheme, host, port and path)."""
        try:
            path = target.target.decode("ascii")
            if path.startswith(("http://", "https://")):  # through a forwarding proxy
                url = httpx.URL(path)
            else:
                url = httpx.URL(
                    scheme=target.scheme.decode("ascii"),
                    host=target.host.decode("ascii"),
                    port=target.port,
                    raw_path=target.target,
                )
        except (AttributeError, UnicodeDecodeError, httpx.InvalidURL, TypeError):
            return False
        return _where(url) == _where(self.url)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self._record(event, info)
        if self._user_trace is not None:
            self._user_trace(event, info)


class AsyncTrace(Trace):
    async def __call__(self, event: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        self._record(event, info)
        if self._user_trace is not None:
            await self._user_trace(event, info)


def closing_cause(exit_: GeneratorExit, request: httpx.Request) -> BaseException | None:
    """The exception that made httpx close the auth flow while ``request`` was out.

    A sync flow sees it as the context of its ``GeneratorExit`` (past the outer
    flow's own ``GeneratorExit``); an async flow learns it from the request's trace.
    """
    cause = exit_.__context__
    while isinstance(cause, GeneratorExit):
        cause = cause.__context__
    if cause is None:
        trace = request.extensions.get("trace")
        cause = trace.error if isinstance(trace, Trace) else None
    return cause


def _transport_failure(error: BaseException) -> bool:
    """True for a failure to exchange bytes: httpx's, httpcore's (seen unwrapped), the OS's."""
    module = type(error).__module__
    return isinstance(error, httpx.TransportError | OSError) or module.split(".")[0] == "httpcore"


def closed_by(
    cause: BaseException | None, request: httpx.Request, dialect: Dialect, url: str, now: float
) -> TokenError | None:
    """Why httpx closed our flow while a token request was out, as our error.

    ``None`` when it was not the token request's fault (cancellation, say).
    """
    trace = request.extensions.get("trace")
    status: int | None = None
    headers: Mapping[str, str] = {}
    body = b""
    if isinstance(cause, RedirectRefused):
        answer = trace.answer if isinstance(trace, Trace) else None
        status, headers = answer if answer is not None else (307, {"Location": "another address"})
    elif cause is not None and _transport_failure(cause):
        return unreachable(url, cause)
    elif isinstance(cause, httpx.HTTPStatusError):  # a user's raise_for_status event hook
        response = cause.response
        status, headers = response.status_code, response.headers
        with contextlib.suppress(httpx.ResponseNotRead):
            body = response.content
    elif cause is not None or not isinstance(trace, Trace):
        return None
    elif trace.answer is not None:  # async: a hook raised after the answer
        status, headers = trace.answer
    if status is None or 200 <= status < 300:
        return None
    try:
        parse_response(dialect, url, status, headers, body, now)
    except TokenError as exc:
        return exc
    return None
