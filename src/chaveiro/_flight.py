"""Single flight: the flights that fill each identity's slot, and its counters.

A :class:`Flight` carries a token or a failure to every caller that waits for
it, on threads, asyncio loops and trio alike. The per-identity state it fills
(the held token, the flight in progress, the cool-down, the :class:`Stats`)
lives in :mod:`chaveiro._slots`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import sniffio

from chaveiro._caches import TokenCache
from chaveiro._errors import TokenError
from chaveiro._token import Token

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "RENEWAL_THREAD",
    "Flight",
    "Stats",
    "backend_name",
    "wait_for_renewals",
]


@dataclass(slots=True)
class Stats:
    """Counters for one identity in this process (``auth.stats`` is a snapshot of them)."""

    fetched: int = 0
    """Token requests that gave a token (first fetches and renewals)."""
    renewed: int = 0
    """Of those, the ones that replaced an earlier token."""
    reused: int = 0
    """Requests answered without a token request of their own: from the held token, or
    from the token another caller fetched while they waited (see :attr:`waited`)."""
    failed: int = 0
    """Renewals that failed (after retries)."""
    replayed: int = 0
    """Requests replayed after a 401."""
    cache_hits: int = 0
    """Tokens found in the cache that another auth object or process had fetched."""
    nonce_retries: int = 0
    """Requests sent again with a new DPoP nonce (RFC 9449 §8, §9), token requests included."""
    waited: int = 0
    """Of the :attr:`reused`, the requests that waited for another caller's fetch (a cold
    start, an expired token). Every request that got a token is counted once: in
    :attr:`fetched`, :attr:`cache_hits` or :attr:`reused`."""

    def copy(self) -> Stats:
        return copy.copy(self)


class Flight:
    """One fetch in progress; everyone who needs its result waits on it."""

    __slots__ = ("_callbacks", "_event", "_lock", "_loops", "error", "token")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._loops: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}
        self.token: Token | None = None
        self.error: TokenError | None = None

    def finish(self, token: Token | None = None, error: TokenError | None = None) -> None:
        """Publish the outcome (neither: the leader gave up; waiters try again)."""
        with self._lock:
            self.token, self.error = token, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
            self._loops = {}
        for callback in callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """Wait without blocking the event loop (asyncio or trio)."""
        if self._event.is_set():
            return True
        if sniffio.current_async_library() == "trio":
            import trio  # noqa: PLC0415 - only under trio

            event = trio.Event()
            trio_token = trio.lowlevel.current_trio_token()

            def wake_trio() -> None:
                with contextlib.suppress(trio.RunFinishedError):  # that run is over
                    trio_token.run_sync_soon(event.set)

            self.add_done_callback(wake_trio)
            with trio.move_on_after(timeout):
                await event.wait()
            return self._event.is_set()
        return await self._wait_asyncio(timeout)

    async def _wait_asyncio(self, timeout: float) -> bool:
        """Every task of one loop waits on one future, so finishing costs one wake-up per loop."""
        import asyncio  # noqa: PLC0415 - already loaded when running under asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event.is_set():
                return True
            shared = self._loops.get(loop)
            if shared is None:
                shared = self._loops[loop] = loop.create_future()
                self._callbacks.append(partial(_wake, loop, shared))
        # shield: one waiter's timeout must not cancel the others' future.
        # asyncio.TimeoutError: the builtin TimeoutError only from Python 3.11 on.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(shared), timeout)
        return self._event.is_set()


def _wake(loop: asyncio.AbstractEventLoop, shared: asyncio.Future[None]) -> None:
    """Resolve ``shared``, the future the tasks of ``loop`` wait on, from whatever thread."""
    import asyncio  # noqa: PLC0415 - loaded: a loop of it is waiting

    def resolve() -> None:
        if not shared.done():
            shared.set_result(None)

    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:  # finished by a thread
        here = False
    if here:  # finished by a task of the same loop: no wake-up through its self-pipe
        resolve()
        return
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
        loop.call_soon_threadsafe(resolve)


def backend_name(cache: TokenCache) -> str:
    """A short name for the kind of ``cache``: ``memory``, ``file``, ``redis``..."""
    return _kind_name(type(cache))


@functools.cache  # one string per kind of cache, not one per identity
def _kind_name(kind: type) -> str:
    name = kind.__name__.lower()
    return name.removesuffix("cache") or name


RENEWAL_THREAD = "chaveiro-renewal"
"""The name of the daemon threads that renew still-valid tokens in the background."""


def wait_for_renewals(timeout: float = 30.0) -> bool:
    """Wait for background renewals in progress; False if one is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == RENEWAL_THREAD and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True
