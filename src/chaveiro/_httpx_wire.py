"""How chaveiro's token request travels through a user's httpx-family client.

It goes to ``token_url`` and nowhere else: its body can be sent once only, and
its ``trace`` extension stops the client before it sends the request to any
other address, so a client that follows redirects cannot carry credentials to
a redirect's target. Through a proxy, the tunnel (``CONNECT``) must lead to the
token endpoint's host and port, and a forwarded request must name ``token_url``.
When the client fails and ends the call, the trace and the closing exception
tell why, as one of our typed errors.

Nothing here imports httpx, httpx2 or their cores: the library of each token
request is known (:func:`~chaveiro._httpx_family.library_of`), and their
exceptions are matched by name (:func:`~chaveiro._httpx_family.family`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from types import ModuleType
from typing import Any

from chaveiro._dialect import Dialect, parse_response
from chaveiro._errors import TokenError
from chaveiro._httpx_family import CORES, family
from chaveiro._transport import unreachable

__all__ = [
    "AsyncTrace",
    "RedirectRefused",
    "Trace",
    "closed_by",
    "closing_cause",
    "one_shot",
]


_NOT_A_URL: tuple[type[BaseException], ...] = (
    AttributeError,
    UnicodeDecodeError,
    TypeError,
    ValueError,
)


class RedirectRefused(Exception):  # noqa: N818 - never leaves chaveiro
    """Raised by the token request's trace before it is sent to another address."""


class _OneShot:
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


_ONE_SHOTS: dict[ModuleType, type[_OneShot]] = {}


def one_shot(library: ModuleType, body: bytes) -> _OneShot:
    """``body`` as a one-shot stream of ``library`` (its transports check the stream's type)."""
    kind = _ONE_SHOTS.get(library)
    if kind is None:
        bases = (_OneShot, library.SyncByteStream, library.AsyncByteStream)
        kind = _ONE_SHOTS[library] = type("OneShot", bases, {})
    return kind(body)


def _where(url: Any) -> tuple[str, bytes, int | None, bytes]:
    """Scheme, host, port and path of an httpx ``url``: what a request must match to be ours."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.raw_host.lower(), port, url.raw_path.partition(b"?")[0]


class Trace:
    """httpcore's ``trace`` request extension on our token request.

    It refuses to let the request go to any address but ``token_url``, and it
    remembers why the request failed and what the endpoint answered: httpx
    closes the auth flow when the request fails, and a closed async generator
    is not told why. Events go on to the user's own ``trace``, if their request
    had one.
    """

    def __init__(self, library: ModuleType, url: Any, user_trace: Any) -> None:
        self.library = library
        self.error: BaseException | None = None
        self.answer: tuple[int, dict[str, str]] | None = None
        """Status and headers of the last answer from the token endpoint, once they arrived."""
        self._user_trace = user_trace
        self._ours = _where(url)
        _, host, port, _ = self._ours
        self._tunnel = b"%b:%d" % (host, port or 0)
        """What a proxy tunnel to the token endpoint asks for: ``CONNECT host:port``."""
        self._through_proxy = False

    def _record(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            request = info.get("request")
            self._through_proxy = getattr(request, "method", None) == b"CONNECT"
            if request is not None and not self._same(request):
                self.error = RedirectRefused()
                raise self.error
        error = info.get("exception")
        if self.error is None and event.endswith(".failed") and isinstance(error, Exception):
            self.error = error
        if event.endswith("receive_response_headers.complete") and not self._through_proxy:
            answer = info.get("return_value")
            # HTTP/1.1: (version, status, reason, headers); HTTP/2: (status, headers)
            if isinstance(answer, tuple) and len(answer) in (2, 4):
                status, headers = answer[-3 if len(answer) == 4 else 0], answer[-1]
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    self.answer = (
                        int(status),
                        {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                    )

    def _same(self, request: Any) -> bool:
        """True if httpcore's ``request`` goes to our token URL (scheme, host, port and path).

        A proxy tunnel's ``CONNECT`` must lead to the token endpoint's host and
        port; the request sent through it is checked in turn.
        """
        try:
            target = request.url
            if self._through_proxy:
                return bytes(target.target).lower() == self._tunnel
            path = target.target.decode("ascii")
            url_type = self.library.URL
            if path.startswith(("http://", "https://")):  # through a forwarding proxy
                url = url_type(path)
            else:
                url = url_type(
                    scheme=target.scheme.decode("ascii"),
                    host=target.host.decode("ascii"),
                    port=target.port,
                    raw_path=target.target,
                )
            return _where(url) == self._ours
        except _NOT_A_URL + family("InvalidURL"):
            return False

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self._record(event, info)
        if self._user_trace is not None:
            self._user_trace(event, info)


class AsyncTrace(Trace):
    async def __call__(self, event: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        self._record(event, info)
        if self._user_trace is not None:
            await self._user_trace(event, info)


def closing_cause(exit_: GeneratorExit, request: Any) -> BaseException | None:
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
    """True for a failure to exchange bytes: the library's or its core's, or the OS's."""
    module = type(error).__module__
    return isinstance(error, (OSError, *family("TransportError"))) or module.split(".")[0] in CORES


def closed_by(
    cause: BaseException | None, request: Any, dialect: Dialect, url: str, now: float
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
    elif isinstance(cause, family("HTTPStatusError")):  # a user's raise_for_status event hook
        response: Any = getattr(cause, "response", None)
        status, headers = response.status_code, response.headers
        with contextlib.suppress(*family("ResponseNotRead")):
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
