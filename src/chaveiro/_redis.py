"""``RedisCache``: one token per identity for a whole fleet of machines.

redis-py (the ``redis`` extra) is imported when a ``RedisCache`` is made, never at
``import chaveiro``. Sync calls use a redis-py client; async calls use
``redis.asyncio`` under asyncio and the sync client in a worker thread under any
other event loop (trio).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import sniffio

from chaveiro import _travel
from chaveiro._caches import cache_trouble, paused, polled_lock
from chaveiro._errors import ConfigurationError
from chaveiro._token import Token

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.lock
    import redis.lock
    from redis.asyncio.connection import AbstractConnection

__all__ = ["RedisCache"]

logger = logging.getLogger("chaveiro")

_DERIVABLE_KWARGS = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
    }
)
"""Connection settings of a sync client that mean the same to ``redis.asyncio``."""

_instances: weakref.WeakSet[RedisCache] = weakref.WeakSet()


def _import_redis() -> None:
    try:
        import redis.asyncio  # noqa: PLC0415, F401 - the optional dependency, on first use
    except ImportError as exc:
        raise ConfigurationError(
            "RedisCache needs the redis package, which is not installed: install"
            " chaveiro with its redis extra, pip install 'chaveiro[redis]'."
        ) from exc


class RedisCache:
    """Tokens in Redis, shared by every process on every machine that uses it.

    ``RedisCache("redis://cache.internal:6379/0")``, or ``RedisCache(client=r)`` with
    your own ``redis.Redis`` (and optionally ``async_client=``, a
    ``redis.asyncio.Redis``). Keys are ``prefix`` + ``token:`` or ``lock:`` + a
    digest of the identity; a token expires from Redis when it expires. While
    Redis is down or slow, requests go on with tokens kept in each process: one
    warning a minute, and Redis is left alone for ``retry_interval`` seconds
    after each failure. Clients made from ``url`` use short timeouts
    (``connect_timeout``, ``timeout``) and no retries, so an outage costs little.

    Make one ``RedisCache`` per process (at import time is fine, even before a
    ``fork()``): it holds a connection pool. One made from a URL pickles as its
    settings (the URL, with any password in it, and the options), never a
    connection: a copy in the same process is the cache itself, and in another
    process it connects on first use. One made around a client object cannot be
    pickled (a copy in the same process is the cache itself).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = "chaveiro:",
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        retry_interval: float = 5.0,
    ) -> None:
        _import_redis()
        if (url is None) == (client is None):
            raise ConfigurationError(
                "RedisCache needs exactly one of a Redis URL, RedisCache('redis://host:6379/0'),"
                " or a client, RedisCache(client=redis.Redis(...))."
            )
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string, e.g. 'chaveiro:'.")
        self.prefix = prefix
        self.retry_interval = float(retry_interval)
        self._url = url
        self._timeouts = (float(connect_timeout), float(timeout))
        self._owns_client = client is None
        self._client = client if client is not None else self._client_from_url()
        self._async_client = async_client
        self._async_class = _asyncio_twin(self._client) if self._url is None else None
        pool = getattr(self._client, "connection_pool", None)  # a cluster client has none
        kwargs = getattr(pool, "connection_kwargs", {})
        if "path" in kwargs:
            address = str(kwargs["path"])
        else:
            address = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._where = f"at Redis {address}/{kwargs.get('db', 0)}"
        _instances.add(self)

    def __repr__(self) -> str:
        return f"RedisCache(<{self._where[3:]}>, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple[object, ...]:
        if self._url is None or self._async_client is not None:
            raise TypeError(
                "a RedisCache made around a Redis client object cannot be pickled or sent to"
                " another process. Build it from a URL instead, RedisCache('redis://host:6379/0',"
                " ...): then it, and auth objects that use it, can be."
            )
        connect_timeout, timeout = self._timeouts
        options = {
            "prefix": self.prefix,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "retry_interval": self.retry_interval,
        }
        return _travel.reduce(self, RedisCache, (self._url,), options)

    def __copy__(self) -> RedisCache:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RedisCache:
        return self

    def close(self) -> None:
        """Close the connections of a client made from ``url`` (a client you passed is yours)."""
        if self._owns_client:
            self._client.close()

    # ---- clients ----------------------------------------------------------------------------

    def _client_from_url(self) -> redis.Redis:
        import redis  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        assert self._url is not None
        connect_timeout, timeout = self._timeouts
        try:
            return redis.Redis.from_url(
                self._url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                **_no_setinfo(),
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"RedisCache: the Redis URL is not valid ({exc}). Use redis://, rediss:// or"
                " unix:// URLs, e.g. redis://cache.internal:6379/0."
            ) from None

    def _new_async_client(self) -> redis.asyncio.Redis:
        """An asyncio client for the same server, for one operation on this event loop."""
        import redis.asyncio  # noqa: PLC0415
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        no_retry = Retry(NoBackoff(), 0)
        if self._url is not None:
            connect_timeout, timeout = self._timeouts
            return redis.asyncio.Redis.from_url(
                self._url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                retry=no_retry,
                **_no_setinfo(),
            )
        pool = self._client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _DERIVABLE_KWARGS}
        kwargs.update(_no_setinfo())
        assert self._async_class is not None
        return redis.asyncio.Redis.from_pool(
            redis.asyncio.ConnectionPool(
                connection_class=self._async_class, retry=no_retry, **kwargs
            )
        )

    def _use_asyncio(self) -> bool:
        """True under asyncio when there is an asyncio client; else worker threads are used."""
        usable = self._url is not None or self._async_client is not None
        return (usable or self._async_class is not None) and _on_asyncio()

    @asynccontextmanager
    async def _asyncio_client(self) -> AsyncIterator[redis.asyncio.Redis]:
        # A client per operation: redis.asyncio connections belong to one event loop,
        # and an auth object may serve several loops over its life.
        if self._async_client is not None:
            yield self._async_client
            return
        client = self._new_async_client()
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _name(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    def _failed(self, action: str, exc: BaseException) -> None:
        cache_trouble(self._where, action, exc, pause=self.retry_interval)

    # ---- sync -------------------------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        import redis  # noqa: PLC0415

        if paused(self._where):
            return None
        try:
            raw = self._client.get(self._name("token", key))
        except (redis.RedisError, OSError) as exc:
            self._failed("read a token", exc)
            return None
        return self._decode(raw, key)

    def _decode(self, raw: object, key: str) -> Token | None:
        if raw is None:
            return None
        if not isinstance(raw, str | bytes):
            raw = b""
        return Token.from_json(raw, source=f"Redis key {self._name('token', key)!r}")

    def set(self, key: str, token: Token) -> None:
        import redis  # noqa: PLC0415

        ttl_ms = _ttl_ms(token)
        if ttl_ms <= 0 or paused(self._where):
            return
        try:
            self._client.set(self._name("token", key), token.to_json(), px=ttl_ms)
        except (redis.RedisError, OSError) as exc:
            self._failed("store a token", exc)

    def _sync_lock(self, key: str, timeout: float) -> redis.lock.Lock:
        lock: redis.lock.Lock = self._client.lock(
            self._name("lock", key),
            timeout=max(1.0, timeout),  # a holder that dies frees the lock by then
            sleep=0.05,
            blocking_timeout=max(0.0, timeout),
            thread_local=False,
        )
        return lock

    def _try_sync_lock(self, lock: redis.lock.Lock, *, blocking: bool) -> bool | None:
        """Take ``lock``: True, False when busy (or timed out), None when Redis failed."""
        import redis  # noqa: PLC0415

        try:
            return bool(lock.acquire(blocking=blocking))
        except (redis.RedisError, OSError) as exc:
            self._failed("take a lock", exc)
            return None

    def _release_sync_lock(self, lock: redis.lock.Lock) -> None:
        import redis  # noqa: PLC0415
        from redis.exceptions import LockError  # noqa: PLC0415

        try:
            lock.release()
        except LockError:
            logger.info("the Redis token lock expired before it was released")
        except (redis.RedisError, OSError) as exc:
            self._failed("release a lock", exc)

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        if paused(self._where):
            yield False
            return
        lock = self._sync_lock(key, timeout)
        held = self._try_sync_lock(lock, blocking=True)
        if held is False:
            logger.info("gave up waiting %.1f s for the Redis token lock", timeout)
        try:
            yield bool(held)
        finally:
            if held:
                self._release_sync_lock(lock)

    # ---- async ------------------------------------------------------------------------------

    async def aget(self, key: str) -> Token | None:
        import redis  # noqa: PLC0415

        if paused(self._where):
            return None
        if not self._use_asyncio():
            return await anyio.to_thread.run_sync(self.get, key)
        try:
            async with self._asyncio_client() as client:
                raw = await client.get(self._name("token", key))
        except (redis.RedisError, OSError) as exc:
            self._failed("read a token", exc)
            return None
        return self._decode(raw, key)

    async def aset(self, key: str, token: Token) -> None:
        import redis  # noqa: PLC0415

        ttl_ms = _ttl_ms(token)
        if ttl_ms <= 0 or paused(self._where):
            return
        if not self._use_asyncio():
            await anyio.to_thread.run_sync(self.set, key, token)
            return
        try:
            async with self._asyncio_client() as client:
                await client.set(self._name("token", key), token.to_json(), px=ttl_ms)
        except (redis.RedisError, OSError) as exc:
            self._failed("store a token", exc)

    @asynccontextmanager
    async def alock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        if paused(self._where):
            yield False
            return
        if not self._use_asyncio():
            lock = self._sync_lock(key, timeout)
            attempt = partial(self._try_sync_lock, lock, blocking=False)
            release = partial(self._release_sync_lock, lock)
            async with polled_lock(
                partial(anyio.to_thread.run_sync, attempt),
                partial(anyio.to_thread.run_sync, release),
                timeout,
                what="the Redis token lock",
            ) as held:
                yield held
            return
        async with self._asyncio_client() as client:
            alock = client.lock(
                self._name("lock", key), timeout=max(1.0, timeout), thread_local=False
            )
            async with polled_lock(
                partial(self._try_async_lock, alock),
                partial(self._release_async_lock, alock),
                timeout,
                what="the Redis token lock",
            ) as held:
                yield held

    async def _try_async_lock(self, lock: redis.asyncio.lock.Lock) -> bool | None:
        import redis  # noqa: PLC0415

        try:
            return bool(await lock.acquire(blocking=False))
        except (redis.RedisError, OSError) as exc:
            self._failed("take a lock", exc)
            return None

    async def _release_async_lock(self, lock: redis.asyncio.lock.Lock) -> None:
        import redis  # noqa: PLC0415
        from redis.exceptions import LockError  # noqa: PLC0415

        try:
            await lock.release()
        except LockError:
            logger.info("the Redis token lock expired before it was released")
        except (redis.RedisError, OSError) as exc:
            self._failed("release a lock", exc)


def _ttl_ms(token: Token) -> int:
    """The token's remaining lifetime in milliseconds (Redis drops it then)."""
    return int((token.expires_at - time.time()) * 1000)


@functools.cache
def _no_setinfo() -> dict[str, Any]:
    """Options that skip CLIENT SETINFO on connect: half the round trips of a new connection."""
    from redis.connection import AbstractConnection  # noqa: PLC0415

    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters:
        return {"driver_info": None}  # newer redis-py, where lib_name is deprecated
    return {"lib_name": None, "lib_version": None}


def _asyncio_twin(client: redis.Redis) -> type[AbstractConnection] | None:
    """The ``redis.asyncio`` connection class matching a sync client's, if there is one."""
    import redis.asyncio.connection as aconnection  # noqa: PLC0415

    pool = getattr(client, "connection_pool", None)
    name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    twin = getattr(aconnection, name, None) if name else None
    if isinstance(twin, type) and issubclass(twin, aconnection.AbstractConnection):
        return twin
    return None


def _on_asyncio() -> bool:
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def _after_fork_in_child() -> None:
    # redis-py pools notice a new pid and reconnect; clients we made are replaced
    # outright, so nothing the parent held (a pool lock, a socket) is ever reused.
    for cache in list(_instances):
        if cache._owns_client:
            cache._client = cache._client_from_url()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
