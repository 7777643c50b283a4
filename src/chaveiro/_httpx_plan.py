"""The instructions of the httpx room's plan, and the token-flow drivers that carry some out.

:meth:`chaveiro._httpx.HttpxAuth._plan` yields these; its two drivers (blocking
and awaiting) send requests, read bodies, and hand :class:`Start` and
:class:`Advance` to :class:`Steps` or :class:`AsyncSteps`, which drive the
token manager's flow.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Any

from chaveiro._caches import TokenCache
from chaveiro._manager import TokenManager
from chaveiro._steps import RawResponse, run_async, run_sync

__all__ = [
    "OURS",
    "Advance",
    "AsyncSteps",
    "Closed",
    "Instruction",
    "Read",
    "Start",
    "Steps",
    "TokenRequest",
]


# ---- instructions from the plan to the two drivers -------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start a token flow (``stale``: the access token the API refused); reply: its first item."""

    stale: str | None


@dataclass(frozen=True, slots=True)
class Advance:
    """Give the token flow ``value`` (or throw ``error`` into it); reply: its next item."""

    value: RawResponse | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """Read ``response``'s body, up to the cap when ``capped``; reply: the bytes."""

    response: Any  # the library's Response
    capped: bool = True


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """Send our token ``request`` through the user's client; reply: its response."""

    request: Any  # the library's Request


OURS = (TokenRequest, Start, Advance, Read)
Instruction = Any
"""One of ``OURS``, or a bare request: the user's own (a close of the flow while it is out
needs no telling)."""


class Closed(Exception):  # noqa: N818 - never leaves the httpx room
    """httpx closed the flow while a request was out: its ``GeneratorExit``, carried to the plan.

    A ``GeneratorExit`` thrown into a generator that delegates with ``yield
    from`` closes the inner one without telling it why; this one reaches it.
    """

    def __init__(self, exit_: GeneratorExit) -> None:
        super().__init__()
        self.exit = exit_


class Steps:
    """Carries out :class:`Start` and :class:`Advance` with the blocking token-flow driver."""

    def __init__(self, manager: TokenManager, cache: TokenCache) -> None:
        self.manager, self.cache = manager, cache
        self.driver: Generator[Any, Any, None] | None = None

    def do(self, item: Start | Advance) -> Any:
        if isinstance(item, Start):
            self.close()
            self.driver = run_sync(self.manager.flow(item.stale), self.cache)
            return next(self.driver)
        assert self.driver is not None
        if item.error is not None:
            return self.driver.throw(item.error)
        return self.driver.send(item.value)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()


class AsyncSteps:
    """The same as :class:`Steps`, awaiting (asyncio or trio)."""

    def __init__(self, manager: TokenManager, cache: TokenCache) -> None:
        self.manager, self.cache = manager, cache
        self.driver: AsyncGenerator[Any, Any] | None = None

    async def do(self, item: Start | Advance) -> Any:
        if isinstance(item, Start):
            await self.aclose()
            self.driver = run_async(self.manager.flow(item.stale), self.cache)
            return await self.driver.asend(None)
        assert self.driver is not None
        if item.error is not None:
            return await self.driver.athrow(item.error)
        return await self.driver.asend(item.value)

    async def aclose(self) -> None:
        if self.driver is not None:
            await self.driver.aclose()
