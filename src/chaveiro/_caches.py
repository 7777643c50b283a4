"""Where tokens are kept: the cache protocol, the in-process cache, and what shared caches share.

A cache stores one :class:`~chaveiro._token.Token` per identity key and offers a
lock, so that when a token must be renewed only the holder of the lock asks the
provider. Within one process chaveiro already lets a single caller fetch; the
lock matters for caches shared between processes (:class:`~chaveiro.FileCache`) or
machines (:class:`~chaveiro.RedisCache`).

The token manager keeps the current token in the process and consults the
cache only when that token is missing or due for renewal, so a cache is read
about once per token lifetime, not once per request.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio
import anyio.to_thread

from chaveiro import _travel
from chaveiro._errors import ChaveiroError, ConfigurationError, excerpt
from chaveiro._lru import Lru
from chaveiro._token import Token

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "LOCK_POLL",
    "MemoryCache",
    "TokenCache",
    "cache_advice",
    "cache_trouble",
    "check_max_entries",
    "default_cache",
    "paused",
    "polled_lock",
    "reset_cache_health",
]

logger = logging.getLogger("chaveiro")

WARN_INTERVAL = 60.0
"""A failing shared cache is reported at most once per this many seconds."""

_MAX_FILE_BYTES = 256 * 1024
LOCK_POLL = 0.05
"""Seconds between two attempts at a busy lock of a shared cache."""
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")


@runtime_checkable
class TokenCache(Protocol):
    """What chaveiro needs from a token cache: three operations, each in two spellings.

    - ``get(key)`` returns the stored token, or ``None`` when there is none or
      the store cannot be read.
    - ``set(key, token)`` stores a token, best effort; a store may drop it once
      ``token.expires_at`` has passed.
    - ``lock(key, timeout)`` is a context manager holding a lock named by ``key``
      across processes (or machines) for at most ``timeout`` seconds. It yields
      ``True`` when it got the lock and ``False`` when it gave up waiting or
      cannot lock at all; the caller then fetches without it.

    ``aget``, ``aset`` and ``alock`` do the same from asyncio or trio code without
    blocking the event loop. Keys are hex digests of an identity, never a secret.

    A cache should not raise: a failure means "no token" or "no lock", reported
    by the cache itself. chaveiro turns anything a cache raises into a warning
    all the same, because a cache failure must never fail a request.
    """

    def get(self, key: str) -> Token | None: ...

    def set(self, key: str, token: Token) -> None: ...

    def lock(self, key: str, timeout: float) -> AbstractContextManager[bool]: ...

    async def aget(self, key: str) -> Token | None: ...

    async def aset(self, key: str, token: Token) -> None: ...

    def alock(self, key: str, timeout: float) -> AbstractAsyncContextManager[bool]: ...


DEFAULT_MAX_ENTRIES = 10_000
"""How many tokens a :class:`MemoryCache` keeps unless told otherwise, the default cache too.

A kept token costs about 2.4 KB with its state (a 670-character JWT, its
``Authorization`` header, the identity's slot: ``benchmarks/memory.py``), so the
bound caps tokens that no live auth object uses at about 25 MB: more tenants
than most services serve within one token lifetime, little next to a worker's
memory. Auth objects that are alive keep their own identity's token whatever
the bound (see :mod:`chaveiro._slots`).
"""


def check_max_entries(max_entries: object) -> int | None:
    """``max_entries`` for a :class:`MemoryCache`: a whole number >= 1, or ``None`` (no bound)."""
    if max_entries is None:
        return None
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigurationError(
            f"max_entries must be a whole number >= 1 (how many tokens the cache keeps), or"
            f" None for no bound; got {max_entries!r}."
        )
    return max_entries


class MemoryCache:
    """Tokens in this process's memory: the default, shared by every auth object.

    ``MemoryCache()`` makes a private cache; auth objects built without
    ``cache=`` share the process-wide one returned by ``default_cache()``.

    It keeps at most ``max_entries`` tokens (10,000 by default; ``None``: no
    bound), dropping the least recently used first, and drops
    expired ones as auth objects come and go. The token of an auth object that
    is alive stays in the process whatever the bound: only tokens that nobody
    holds are dropped.

    Pickled or copied, a MemoryCache carries no token: a copy in the same process
    is the cache itself, and in another process every copy of one cache is one
    new, empty cache (the default cache: that process's default cache).
    """

    def __init__(self, max_entries: int | None = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = check_max_entries(max_entries)
        self._tokens: Lru[Token] = Lru()
        self._lock = threading.Lock()
        _memory_caches.add(self)

    def __repr__(self) -> str:
        return f"MemoryCache(<{len(self._tokens)} tokens>, max_entries={self.max_entries})"

    def __reduce__(self) -> tuple[object, ...]:
        if self is _DEFAULT:
            return default_cache, ()
        return _travel.reduce(self, MemoryCache, (self.max_entries,))

    def __contains__(self, key: object) -> bool:
        """True while a token is kept for ``key``; its place in the order is left alone."""
        return isinstance(key, str) and key in self._tokens

    def get(self, key: str) -> Token | None:
        with self._lock:
            return self._tokens.get(key)

    def set(self, key: str, token: Token) -> None:
        with self._lock:
            self._tokens.put(key, token)
            if self.max_entries is not None:
                while len(self._tokens) > self.max_entries:
                    self._tokens.pop_oldest()

    def touch(self, key: str) -> None:
        """Make the token of ``key`` the most recently used: its identity is in use."""
        with self._lock:
            self._tokens.get(key)

    def discard_expired(self, key: str, now: float) -> None:
        """Drop the token of ``key`` if it has expired at ``now``."""
        with self._lock:
            token = self._tokens.peek(key)
            if token is not None and not token.is_valid(now):
                self._tokens.pop(key)

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._tokens.clear()

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        # One process: chaveiro's own single flight already lets one caller fetch.
        yield True

    async def aget(self, key: str) -> Token | None:
        return self.get(key)

    async def aset(self, key: str, token: Token) -> None:
        self.set(key, token)

    @asynccontextmanager
    async def alock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        yield True


_memory_caches: weakref.WeakSet[MemoryCache] = weakref.WeakSet()
"""Every MemoryCache alive, whose lock a child process makes anew after ``fork()``."""
_DEFAULT = MemoryCache()


def default_cache() -> MemoryCache:
    """The process-wide cache used when no ``cache=`` is given."""
    return _DEFAULT


# ---- failures of shared caches -------------------------------------------------------------


@dataclass(slots=True)
class _Trouble:
    warned_at: float = -WARN_INTERVAL
    unreported: int = 0
    paused_until: float = 0.0
    advised: set[str] = field(default_factory=set)


_troubles: dict[str, _Trouble] = {}
_troubles_lock = threading.Lock()


def cache_trouble(where: str, action: str, exc: BaseException, *, pause: float = 0.0) -> None:
    """Report that the cache ``where`` failed at ``action``, at most once a minute.

    ``pause`` > 0 also leaves the backend alone for that many seconds (see
    :func:`paused`), so that a store that is down costs one timeout, not one per call.
    A store's own error is excerpted; a :class:`ChaveiroError` (a message of ours that
    says what to do) is shown whole.
    """
    now = time.monotonic()
    with _troubles_lock:
        trouble = _troubles.setdefault(where, _Trouble())
        trouble.paused_until = max(trouble.paused_until, now + pause)
        if now - trouble.warned_at < WARN_INTERVAL:
            trouble.unreported += 1
            return
        unreported, trouble.unreported, trouble.warned_at = trouble.unreported, 0, now
    logger.warning(
        "token cache %s failed to %s (%s: %s); requests go on with the tokens kept in this"
        " process%s%s",
        where,
        action,
        type(exc).__name__,
        str(exc) if isinstance(exc, ChaveiroError) else excerpt(str(exc), 160),
        f"; not asking it again for {pause:.0f} s" if pause > 0 else "",
        f" ({unreported} more failures since the last warning)" if unreported else "",
        extra={"chaveiro_event": "cache_failed"},
    )


def cache_advice(where: str, topic: str, advice: str) -> None:
    """Warn once per process that the cache ``where`` works, but not as well as it could.

    For a setting to change rather than a failure: ``advice`` says what to do;
    ``topic`` names it, so that each piece of advice is given once.
    """
    with _troubles_lock:
        advised = _troubles.setdefault(where, _Trouble()).advised
        if topic in advised:
            return
        advised.add(topic)
    logger.warning("token cache %s: %s", where, advice, extra={"chaveiro_event": "cache_advice"})


def paused(where: str) -> bool:
    """True while the cache ``where`` is left alone after a failure."""
    trouble = _troubles.get(where)
    return trouble is not None and time.monotonic() < trouble.paused_until


def reset_cache_health() -> None:
    """Forget every failure of every shared cache (for tests)."""
    with _troubles_lock:
        _troubles.clear()


@asynccontextmanager
async def polled_lock(
    attempt: Callable[[], Awaitable[bool | None]],
    release: Callable[[], Awaitable[None]],
    timeout: float,
    *,
    what: str,
) -> AsyncIterator[bool]:
    """Hold a lock taken by non-blocking attempts, repeated until ``timeout``.

    ``attempt`` answers True (taken), False (busy) or None (the store failed: stop).
    Waiting can be cancelled; an attempt and the release cannot, so a lock that was
    taken is never lost.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        with anyio.CancelScope(shield=True):
            outcome = await attempt()
        if outcome is not False:
            break
        if time.monotonic() >= deadline:
            logger.info("gave up waiting %.1f s for %s", timeout, what)
            break
        await anyio.sleep(LOCK_POLL)
    try:
        yield bool(outcome)
    finally:
        if outcome:
            with anyio.CancelScope(shield=True):
                await release()


def _after_fork_in_child() -> None:
    global _troubles_lock  # noqa: PLW0603 - a lock held at fork() time stays held in the child
    _troubles_lock = threading.Lock()
    for cache in list(_memory_caches):
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
