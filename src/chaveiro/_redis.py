"""``RedisCache``: one token per identity for a whole fleet of machines.

redis-py (the ``redis`` extra) is imported when a ``RedisCache`` is made, never at
``import chaveiro``. Sync calls use a redis-py client (:mod:`._redis_link`); the lock
is a short lease kept alive by its holder (:mod:`._redis_lease`). Under asyncio, reads
and writes use ``redis.asyncio`` when the cache talks to one server; the lock, and
everything under other event loops (trio) or with a cluster or Sentinel, runs the
sync client in worker threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import sniffio

from chaveiro import _travel
from chaveiro._caches import paused, polled_lock
from chaveiro._errors import ConfigurationError
from chaveiro._redis_lease import Lease
from chaveiro._redis_link import Failed, Link, Outcome, failures, is_moved, no_setinfo
from chaveiro._redis_urls import url_of
from chaveiro._token import Token

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.asyncio.connection import AbstractConnection

__all__ = ["RedisCache"]

_T = TypeVar("_T")
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

    ``RedisCache("redis://cache.internal:6379/0")`` (also ``rediss://``, ``unix://``,
    a node of a Redis Cluster, or ``redis+sentinel://host:26379/mymaster/0``), or
    ``RedisCache(client=r)`` with your own ``redis.Redis``, ``RedisCluster`` or
    Sentinel master client (and optionally ``async_client=``, a ``redis.asyncio``
    client, which belongs to one event loop). Keys are ``prefix`` + ``token:`` or
    ``lock:`` + a digest of the identity; a token expires from Redis when it expires.
    While Redis is down or slow, requests go on with tokens kept in each process:
    one warning a minute, and Redis is left alone for ``retry_interval`` seconds
    after each failure. Clients made from ``url`` use short timeouts
    (``connect_timeout``, ``timeout``) and no retries, so an outage costs little.

    The lock is a lease of ``lock_lease`` seconds, renewed by its holder while it
    lives: when a holder dies, the others wait that long at most.

    Make one ``RedisCache`` per process (at import time is fine, even before a
    ``fork()``): it holds a connection pool. It pickles as its settings (the URL,
    with any password in it, and the options), never a connection: a copy in the
    same process is the cache itself, and in another process it connects on first
    use. One made around a client travels as that client's URL; a client that no
    URL can describe (a credential provider, say) cannot be pickled.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | redis.RedisCluster | None = None,
        async_client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        prefix: str = "chaveiro:",
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        retry_interval: float = 5.0,
        lock_lease: float = 3.0,
    ) -> None:
        _import_redis()
        if (url is None) == (client is None):
            raise ConfigurationError(
                "RedisCache needs exactly one of a Redis URL, RedisCache('redis://host:6379/0'),"
                " or a client, RedisCache(client=redis.Redis(...))."
            )
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string, e.g. 'chaveiro:'.")
        lease: object = lock_lease
        if not isinstance(lease, int | float) or not 0.1 <= lease < math.inf:
            raise ConfigurationError(
                "lock_lease must be a number of seconds, at least 0.1: how long a lock outlives"
                " a holder that died, e.g. lock_lease=3.0."
            )
        self.prefix = prefix
        self.retry_interval = float(retry_interval)
        self.lock_lease = float(lock_lease)
        self._timeouts = (float(connect_timeout), float(timeout))
        self._link = Link(url, client, timeouts=self._timeouts, retry_interval=self.retry_interval)
        self._async_client = async_client
        self._async_class = _asyncio_twin(client) if client is not None else None

    @property
    def _where(self) -> str:
        return self._link.where

    def __repr__(self) -> str:
        return f"RedisCache(<{self._where[3:]}>, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple[object, ...]:
        url = self._link.url or url_of(self._link.client)
        if url is None:
            raise TypeError(
                f"this RedisCache cannot be pickled or sent to another process: its client"
                f" ({self._where[3:]}) uses settings that no URL can carry, such as a"
                " credential_provider. Build the cache from a URL instead,"
                " RedisCache('redis://user:password@host:6379/0', ...): then it, and auth"
                " objects that use it, can be."
            )
        connect_timeout, timeout = self._timeouts
        options = {
            "prefix": self.prefix,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "retry_interval": self.retry_interval,
            "lock_lease": self.lock_lease,
        }
        return _travel.reduce(self, RedisCache, (url,), options)

    def __copy__(self) -> RedisCache:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RedisCache:
        return self

    def close(self) -> None:
        """Close the connections of a client made from ``url`` (a client you passed is yours)."""
        self._link.close()

    def _name(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    # ---- sync -------------------------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        if paused(self._where):
            return None
        raw = self._link.run("read a token", lambda c: c.get(self._name("token", key)))
        return None if raw is Outcome.FAILED else self._decode(raw, key)

    def _decode(self, raw: object, key: str) -> Token | None:
        if raw is None:
            return None
        if not isinstance(raw, str | bytes):
            raw = b""
        return Token.from_json(raw, source=f"Redis key {self._name('token', key)!r}")

    def set(self, key: str, token: Token) -> None:
        ttl_ms = _ttl_ms(token)
        if ttl_ms <= 0 or paused(self._where):
            return
        self._link.run(
            "store a token", lambda c: c.set(self._name("token", key), token.to_json(), px=ttl_ms)
        )

    def _lease(self, key: str, timeout: float) -> Lease:
        name = self._name("lock", key)
        return Lease(self._link, name, seconds=self.lock_lease, hold=timeout)

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        if paused(self._where):
            yield False
            return
        with self._lease(key, timeout).held(timeout) as held:
            yield held

    # ---- async ------------------------------------------------------------------------------

    async def aget(self, key: str) -> Token | None:
        if paused(self._where):
            return None
        if self._use_asyncio():
            raw = await self._arun("read a token", lambda c: c.get(self._name("token", key)))
            if raw is not Outcome.MOVED:
                return None if raw is Outcome.FAILED else self._decode(raw, key)
        return await anyio.to_thread.run_sync(self.get, key)

    async def aset(self, key: str, token: Token) -> None:
        ttl_ms = _ttl_ms(token)
        if ttl_ms <= 0 or paused(self._where):
            return
        if self._use_asyncio():
            done = await self._arun(
                "store a token",
                lambda c: c.set(self._name("token", key), token.to_json(), px=ttl_ms),
            )
            if done is not Outcome.MOVED:
                return
        await anyio.to_thread.run_sync(self.set, key, token)

    @asynccontextmanager
    async def alock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        # The lock runs the sync client in worker threads under every event loop: its
        # lease is renewed by a thread, and each attempt is one short command.
        if paused(self._where):
            yield False
            return
        lease = self._lease(key, timeout)
        async with polled_lock(
            partial(anyio.to_thread.run_sync, lease.take),
            partial(anyio.to_thread.run_sync, lease.release),
            timeout,
            what="the Redis token lock",
        ) as held:
            yield held

    async def _arun(
        self, action: str, command: Callable[[Any], Awaitable[_T]]
    ) -> _T | Failed | Outcome:
        """``await command(client)`` with an asyncio client; ``MOVED``: ask again in a thread."""
        seen = self._link.client
        try:
            async with self._asyncio_client() as client:
                return await command(client)
        except failures() as exc:
            if is_moved(exc):
                return Outcome.MOVED if self._link.moved(seen, action, exc) else Outcome.FAILED
            self._link.failed(action, exc)
            return Outcome.FAILED

    def _use_asyncio(self) -> bool:
        """True under asyncio with an asyncio client for one server; else threads are used."""
        if self._link.cluster or not _on_asyncio():
            return False
        made = self._link.single_server_url is not None or self._async_class is not None
        return self._async_client is not None or made

    @asynccontextmanager
    async def _asyncio_client(self) -> AsyncIterator[Any]:
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

    def _new_async_client(self) -> redis.asyncio.Redis:
        """An asyncio client for the same server, for one operation on this event loop."""
        import redis.asyncio  # noqa: PLC0415
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        no_retry = Retry(NoBackoff(), 0)
        url = self._link.single_server_url
        if url is not None:
            connect_timeout, timeout = self._timeouts
            return redis.asyncio.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                retry=no_retry,
                **no_setinfo(),
            )
        pool = self._link.client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _DERIVABLE_KWARGS}
        kwargs.update(no_setinfo())
        assert self._async_class is not None
        return redis.asyncio.Redis.from_pool(
            redis.asyncio.ConnectionPool(
                connection_class=self._async_class, retry=no_retry, **kwargs
            )
        )


def _ttl_ms(token: Token) -> int:
    """The token's remaining lifetime in milliseconds (Redis drops it then)."""
    return int((token.expires_at - time.time()) * 1000)


def _asyncio_twin(client: object) -> type[AbstractConnection] | None:
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
