"""The sync Redis client of a RedisCache, and what befalls it: failures, a cluster, fork().

A :class:`Link` holds the client (made from the cache's URL, or the one passed in),
names where it points, and runs commands on it. A failed command becomes the
shared caches' one warning a minute and pause (:func:`~chaveiro._caches.cache_trouble`),
never an exception. A server named by a ``redis://`` URL that answers ``MOVED`` is a
node of a Redis Cluster: the link replaces its client by a ``RedisCluster`` made
from the same URL, and runs the command again. redis-py is imported by the caller
(``RedisCache``) before a link is made.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from chaveiro._caches import cache_trouble
from chaveiro._errors import ConfigurationError
from chaveiro._redis_urls import SENTINEL_SCHEMES, address_of, sentinel_client

if TYPE_CHECKING:
    from redis.retry import Retry

__all__ = ["Link", "Outcome", "failures", "is_moved"]

logger = logging.getLogger("chaveiro")

_T = TypeVar("_T")
_links: weakref.WeakSet[Link] = weakref.WeakSet()


class Outcome(enum.Enum):
    """What a command gave instead of its answer."""

    FAILED = "failed"
    """It failed, and the failure was reported."""
    MOVED = "moved"
    """The server is a node of a cluster, and the link now holds a cluster client: ask again."""


Failed = Literal[Outcome.FAILED]


@functools.cache
def failures() -> tuple[type[BaseException], ...]:
    """What a redis-py command raises when Redis cannot serve it."""
    import redis  # noqa: PLC0415
    from redis.exceptions import RedisClusterException  # noqa: PLC0415

    return redis.RedisError, RedisClusterException, OSError


def is_moved(exc: BaseException) -> bool:
    """True for a ``MOVED`` answer: the server is a node of a cluster, and not the key's."""
    from redis.exceptions import MovedError, ResponseError  # noqa: PLC0415

    # Before redis-py 6 (or so), a plain client's parser left MOVED a ResponseError.
    return isinstance(exc, MovedError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("MOVED ")
    )


class Link:
    """One RedisCache's sync client: made, named, used, replaced."""

    def __init__(
        self,
        url: str | None,
        client: Any,
        *,
        timeouts: tuple[float, float],
        retry_interval: float,
    ) -> None:
        self.url = url
        self.owns = client is None
        self.retry_interval = retry_interval
        self.scripts = True
        """False once Redis refused EVALSHA/EVAL to this user (see :mod:`._redis_lease`)."""
        self.cluster = False
        self._timeouts = timeouts
        self._switch = threading.Lock()
        self.client: Any = client if client is not None else self._from_url()
        self.where = f"at Redis {address_of(self.client)}"
        _links.add(self)

    @property
    def single_server_url(self) -> str | None:
        """The URL when it names one server (asyncio clients are made from it), else None."""
        if self.url is None or self.cluster or self.url.startswith(SENTINEL_SCHEMES):
            return None
        return self.url

    def close(self) -> None:
        if self.owns:
            self.client.close()

    def failed(self, action: str, exc: BaseException) -> None:
        cache_trouble(self.where, action, exc, pause=self.retry_interval)

    def run(self, action: str, command: Callable[[Any], _T]) -> _T | Failed:
        """``command(client)``, or ``Outcome.FAILED`` after reporting why it failed."""
        for _ in range(2):
            client = self.client
            try:
                return command(client)
            except failures() as exc:
                if not is_moved(exc):
                    self.failed(action, exc)
                    return Outcome.FAILED
                if not self.moved(client, action, exc):
                    return Outcome.FAILED
        return Outcome.FAILED

    def moved(self, seen: object, action: str, exc: BaseException) -> bool:
        """A server answered ``MOVED`` to ``seen``: go on as a cluster client if we can.

        True when the link holds a cluster client now (ask again); False, after a
        warning that says what to do, when it cannot follow the cluster.
        """
        if self.client is not seen:
            return True  # another thread switched meanwhile
        if not self.owns or self.cluster or self.single_server_url is None:
            self.failed(
                action,
                ConfigurationError(
                    f"Redis {address_of(seen)} is a node of a Redis Cluster ({exc}), and this"
                    " client cannot follow the cluster. Give RedisCache a cluster client,"
                    " RedisCache(client=redis.cluster.RedisCluster(host=..., port=...)), or the"
                    " URL of a node, RedisCache('redis://node:6379')."
                ),
            )
            return False
        try:
            cluster = self._cluster_from_url()
        except failures() as error:
            self.failed("reach the Redis Cluster", error)
            return False
        with self._switch:
            raced = self.client is not seen
            if not raced:
                self.client, self.cluster = cluster, True
                self.where = f"at Redis {address_of(cluster)}"
        if raced:  # another thread switched meanwhile: keep its client
            cluster.close()
            return True
        logger.info(
            "Redis %s is a node of a Redis Cluster: RedisCache goes on as a cluster client",
            address_of(seen),
        )
        return True

    # ---- clients made from the URL -----------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        connect_timeout, timeout = self._timeouts
        return {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": timeout,
            "retry": _no_retry(),
            **no_setinfo(),
        }

    def _from_url(self) -> Any:
        import redis  # noqa: PLC0415

        assert self.url is not None
        if self.url.startswith(SENTINEL_SCHEMES):
            return sentinel_client(self.url, **self._options())
        try:
            return redis.Redis.from_url(self.url, **self._options())
        except ValueError as exc:
            raise ConfigurationError(
                f"RedisCache: the Redis URL is not valid ({exc}). Use redis://, rediss://,"
                " unix:// or redis+sentinel:// URLs, e.g. redis://cache.internal:6379/0."
            ) from None

    def _cluster_from_url(self) -> Any:
        from redis.cluster import RedisCluster  # noqa: PLC0415

        assert self.url is not None
        return RedisCluster.from_url(self.url, **self._options())

    def _after_fork(self) -> None:
        # A new client outright, so nothing the parent held (a pool lock, a socket) is
        # reused; a cluster is found again by its first MOVED.
        self._switch = threading.Lock()
        if self.owns:
            self.client, self.cluster = self._from_url(), False
            self.where = f"at Redis {address_of(self.client)}"


def _no_retry() -> Retry:
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    return Retry(NoBackoff(), 0)


@functools.cache
def no_setinfo() -> dict[str, Any]:
    """Options that skip CLIENT SETINFO on connect: half the round trips of a new connection."""
    from redis.connection import AbstractConnection  # noqa: PLC0415

    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters:
        return {"driver_info": None}  # newer redis-py, where lib_name is deprecated
    return {"lib_name": None, "lib_version": None}


def _after_fork_in_child() -> None:
    for link in list(_links):
        link._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
