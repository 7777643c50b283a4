"""The fake server's knobs: scripted failures and thread-safe settings and counters."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, overload

from chaveiro.testing._wire import DialectError, Response, json_response, num

__all__ = ["Failure", "FailureKind"]

FailureKind = Literal[
    "status", "empty", "html", "malformed", "missing_token", "reject", "slow", "drop"
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Failure:
    """A scripted misbehaviour of the token endpoints; build one with the classmethods."""

    kind: FailureKind
    status_code: int = 200
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def status(cls, code: int, *, retry_after: str | float | None = None) -> Failure:
        """Answer HTTP ``code`` (4xx/5xx) with a JSON error body."""
        if not 400 <= code <= 599:
            raise ValueError("Failure.status needs a 4xx or 5xx code")
        return cls("status", code, _retry_after(retry_after))

    @classmethod
    def empty(cls, code: int = 403) -> Failure:
        """Answer HTTP ``code`` (4xx/5xx) with an empty body.

        Glewlwyd refuses every client authentication so, with a 403.
        """
        if not 400 <= code <= 599:
            raise ValueError("Failure.empty needs a 4xx or 5xx code")
        return cls("empty", code)

    @classmethod
    def too_many(cls, *, retry_after: str | float | None = None) -> Failure:
        """Answer 429 Too Many Requests."""
        return cls.status(429, retry_after=retry_after)

    @classmethod
    def html(cls, code: int = 500, *, retry_after: str | float | None = None) -> Failure:
        """Answer an HTML error page (``text/html``), as a proxy would."""
        return cls("html", code, _retry_after(retry_after))

    @classmethod
    def malformed(cls) -> Failure:
        """Answer 200 with a body that is not valid JSON."""
        return cls("malformed")

    @classmethod
    def missing_token(cls) -> Failure:
        """Answer 200 with JSON that has no ``access_token``."""
        return cls("missing_token")

    @classmethod
    def reject(cls) -> Failure:
        """Answer ``invalid_client`` in the dialect's own error shape."""
        return cls("reject")

    @classmethod
    def slow(cls, seconds: float) -> Failure:
        """Wait ``seconds``, then answer normally."""
        return cls("slow", seconds=seconds)

    @classmethod
    def drop(cls) -> Failure:
        """Close the connection without answering."""
        return cls("drop")


def _retry_after(value: str | float | None) -> str | None:
    return value if value is None or isinstance(value, str) else str(num(value))


def rfc6749_shape(error: str, desc: str) -> dict[str, str]:
    return {"error": error, "error_description": desc} if desc else {"error": error}


def failure_response(failure: Failure, render: Callable[[DialectError], Response]) -> Response:
    """The answer ``failure`` scripts; ``render`` shapes a rejection in the dialect's way."""
    code = failure.status_code
    if failure.kind == "status":
        error = {429: "too_many_requests", 503: "temporarily_unavailable"}.get(code)
        resp = json_response(code, rfc6749_shape(error or "server_error", f"simulated HTTP {code}"))
    elif failure.kind == "empty":
        resp = Response(code, b"", "text/plain")
    elif failure.kind == "html":
        page = f"<html><body><h1>{code} Error</h1><p>Simulated failure.</p></body></html>"
        resp = Response(code, page.encode(), "text/html; charset=utf-8")
    elif failure.kind == "malformed":
        resp = Response(200, b'{"access_token": "trunc')
    elif failure.kind == "missing_token":
        resp = json_response(200, {"token_type": "Bearer", "expires_in": 3600})
    elif failure.kind == "reject":
        resp = render(DialectError())
    else:
        resp = Response(0, drop=True)
    if failure.retry_after is not None:
        resp.headers["Retry-After"] = failure.retry_after
    return resp


class FailureQueue:
    """Scripted failures, consumed in order by token requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[Failure, int | None]] = []

    def add(self, failure: Failure, times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            if self._items and self._items[-1][1] is None:
                self._items.pop()
            self._items.append((failure, times))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def next(self) -> Failure | None:
        with self._lock:
            if not self._items:
                return None
            failure, remaining = self._items[0]
            if remaining is not None and remaining <= 1:
                self._items.pop(0)
            elif remaining is not None:
                self._items[0] = (failure, remaining - 1)
            return failure


class _Locked(Protocol):
    _lock: threading.Lock


class Stat(Generic[_T]):
    """Read-only view of the owner's ``_<name>``, copied under its lock."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> Stat[_T]: ...
    @overload
    def __get__(self, obj: _Locked, owner: type) -> _T: ...
    def __get__(self, obj: _Locked | None, owner: type) -> Stat[_T] | _T:
        if obj is None:
            return self
        with obj._lock:
            value: _T = copy.copy(getattr(obj, self.attr))
        return value


class Knob(Stat[_T]):
    """Like ``Stat``, also settable (after ``check``)."""

    def __init__(self, check: Callable[[_T], bool] = lambda value: True) -> None:
        self.check = check

    def __set__(self, obj: _Locked, value: _T) -> None:
        if not self.check(value):
            raise ValueError(f"invalid {self.attr[1:]}: {value!r}")
        with obj._lock:
            setattr(obj, self.attr, copy.copy(value))


def non_negative(value: float) -> bool:
    return value >= 0
