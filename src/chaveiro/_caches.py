"""Where tokens are kept: the cache protocol and the in-process cache.

A cache stores one :class:`~chaveiro._token.Token` per identity key and offers a
lock, so that when a token must be renewed only one holder of the lock asks the
provider. Within one process chaveiro already lets a single caller fetch; the
lock matters for caches shared between processes or machines.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Protocol, runtime_checkable

from chaveiro._token import Token

__all__ = ["MemoryCache", "TokenCache", "default_cache"]


@runtime_checkable
class TokenCache(Protocol):
    """What chaveiro needs from a token cache.

    ``get`` returns the stored token or ``None`` (also when the store fails: a
    cache problem must never fail a request). ``set`` stores a token, best
    effort. ``lock`` is a context manager that holds a lock named by ``key`` for
    at most ``timeout`` seconds and yields ``True`` when it got it, ``False`` when
    it gave up waiting; callers then fetch without it. The ``a``-prefixed
    methods are the same for asyncio and trio code.
    """

    def get(self, key: str) -> Token | None: ...

    def set(self, key: str, token: Token) -> None: ...

    def lock(self, key: str, timeout: float) -> AbstractContextManager[bool]: ...

    async def aget(self, key: str) -> Token | None: ...

    async def aset(self, key: str, token: Token) -> None: ...

    def alock(self, key: str, timeout: float) -> AbstractAsyncContextManager[bool]: ...


class MemoryCache:
    """Tokens in this process's memory: the default, shared by every auth object.

    ``MemoryCache()`` makes a private cache; auth objects built without
    ``cache=`` share the process-wide one returned by :func:`default_cache`.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryCache(<{len(self._tokens)} tokens>)"

    def get(self, key: str) -> Token | None:
        return self._tokens.get(key)

    def set(self, key: str, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

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


_DEFAULT = MemoryCache()


def default_cache() -> MemoryCache:
    """The process-wide cache used when no ``cache=`` is given."""
    return _DEFAULT
