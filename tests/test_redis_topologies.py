"""RedisCache on a real 3-node Redis Cluster and behind a real Sentinel, as run in production."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator

import anyio
import pytest
import redis
import requests
from redis.cluster import RedisCluster, key_slot
from redis.sentinel import Sentinel

from chaveiro import RedisCache
from chaveiro._token import Token
from chaveiro.testing import FakeTokenServer
from tests._redis_servers import free_port
from tests.conftest import FakeClock
from tests.test_shared_caches import run_workers
from tests.test_travel import in_another_process


def _token(access: str = "access-token-value") -> Token:
    return Token(access, time.time() + 60, time.time())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def cluster_client(redis_cluster_url: str) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster_url)
    yield client
    client.close()


@pytest.mark.parametrize("where", ["a cluster node URL", "a Sentinel URL"])
def test_six_processes_ask_for_one_token(
    server: FakeTokenServer, where: str, request: pytest.FixtureRequest
):
    """Six processes, each with RedisCache(url), start at once: one token request in all."""
    fixture = "redis_cluster_url" if where == "a cluster node URL" else "redis_sentinel_url"
    url = request.getfixturevalue(fixture)
    reports = run_workers(server, 6, 1.0, cache="redis", redis_url=url)
    assert [r["failed"] for r in reports] == [0] * 6
    assert [r["warnings"] for r in reports] == [[]] * 6
    assert server.token_requests == 1


def test_a_cluster_node_url_becomes_a_cluster_client(
    redis_cluster_url: str, cluster_client: RedisCluster
):
    """Keys on every node are reached; repr names the cluster; no warning, no MovedError."""
    cache = RedisCache(redis_cluster_url)
    keys = [f"key-{n}" for n in range(12)]  # spread over the three nodes' slots
    for key in keys:
        cache.set(key, _token(f"token-for-{key}-0123"))
    assert {key: cache.get(key).access_token for key in keys} == {  # type: ignore[union-attr]
        key: f"token-for-{key}-0123" for key in keys
    }
    node = redis_cluster_url.removeprefix("redis://").removesuffix("/0")
    assert repr(cache) == f"RedisCache(<Redis cluster {node}>, prefix='chaveiro:')"
    assert len({cluster_client.get_node_from_key(f"chaveiro:token:{k}").name for k in keys}) == 3


@pytest.mark.anyio
async def test_async_spellings_on_a_cluster(redis_cluster_url: str, anyio_backend: str):
    """aset, aget and alock on a cluster node URL, under asyncio and trio."""
    cache = RedisCache(redis_cluster_url)
    for n in range(6):
        token = _token(f"token-number-{n}")
        await cache.aset(f"k{n}", token)
        assert await cache.aget(f"k{n}") == token
    async with cache.alock("k", 5) as held:
        assert held is True
        async with RedisCache(redis_cluster_url).alock("k", 0.2) as other:
            assert other is False


def test_a_cache_on_a_cluster_client_travels_as_a_node_url(
    server: FakeTokenServer, make_auth, cluster_client: RedisCluster, redis_cluster_url: str
):
    """RedisCache(client=RedisCluster(...)): repr names the cluster; a copy elsewhere reads it."""
    cache = RedisCache(client=cluster_client, prefix="fleet:")
    assert "cluster 127.0.0.1:" in repr(cache)
    assert "localhost" not in repr(cache)
    auth = make_auth(cache=cache)
    assert requests.get(server.api_url(), auth=auth).ok
    printed = in_another_process(
        "auth, = objects\nprint(auth.get_token().access_token)\n", pickle.dumps(auth)
    )
    assert printed == server.issued_tokens[0]
    assert server.token_requests == 1


def test_a_plain_client_at_a_cluster_node_says_what_to_do(
    server: FakeTokenServer,
    make_auth,
    redis_cluster_url: str,
    redis_cluster,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """RedisCache(client=redis.Redis(<a node>)): requests succeed; one warning tells the fix."""
    node = redis_cluster.nodes[0]
    slots = range(16384 // 3)  # the first node's slots
    client = redis.Redis.from_url(redis_cluster_url)
    prefix = next(  # keys that this node does not hold, so that it answers MOVED
        p
        for p in (f"p{n}:" for n in range(100))
        if key_slot(f"{p}token:{make_auth()._manager.identity.key}".encode()) not in slots
    )
    clock = FakeClock()
    session = requests.Session()
    session.auth = make_auth(cache=RedisCache(client=client, prefix=prefix), clock=clock)
    for _ in range(3):
        assert session.get(server.api_url()).ok
        clock.now += 3600
    warnings = _warnings(chaveiro_logs)
    assert len(warnings) == 1
    assert f"at Redis 127.0.0.1:{node.port}/0" in warnings[0]
    assert "is a node of a Redis Cluster" in warnings[0]
    assert "RedisCache(client=redis.cluster.RedisCluster(" in warnings[0]
    client.close()


def test_a_sentinel_url_shares_tokens_with_its_master(
    server: FakeTokenServer, make_auth, redis_sentinel_url: str, redis_sentinel
):
    """redis+sentinel:// finds the master; a cache on the master itself reads the same token."""
    cache = RedisCache(redis_sentinel_url)
    port = redis_sentinel.port
    assert repr(cache) == (
        f"RedisCache(<Redis 'mymaster'/0 via Sentinel 127.0.0.1:{port}>, prefix='chaveiro:')"
    )
    assert requests.get(server.api_url(), auth=make_auth(cache=cache)).ok
    on_the_master = make_auth(cache=RedisCache(redis_sentinel.master.url))
    assert requests.get(server.api_url(), auth=on_the_master).ok
    assert server.token_requests == 1


def test_a_cache_on_a_sentinel_client_travels_as_a_sentinel_url(
    server: FakeTokenServer, make_auth, redis_sentinel_url: str, redis_sentinel
):
    """RedisCache(client=Sentinel(...).master_for(...)) pickles as redis+sentinel://."""
    sentinel = Sentinel([("127.0.0.1", redis_sentinel.port)])
    cache = RedisCache(client=sentinel.master_for("mymaster"))
    auth = make_auth(cache=cache)
    assert requests.get(server.api_url(), auth=auth).ok
    data = pickle.dumps(auth)
    assert redis_sentinel_url.encode() in data
    printed = in_another_process("auth, = objects\nprint(auth.get_token().access_token)\n", data)
    assert printed == server.issued_tokens[0]
    assert server.token_requests == 1


@pytest.mark.parametrize("kind", ["sentinel URL", "sentinel client"])
def test_warnings_name_the_sentinels_and_service(
    server: FakeTokenServer, make_auth, kind: str, chaveiro_logs: pytest.LogCaptureFixture
):
    """No Sentinel listening: one warning naming the service and Sentinel, not localhost:6379."""
    port = free_port()
    if kind == "sentinel URL":
        cache = RedisCache(f"redis+sentinel://:master-password@127.0.0.1:{port}/orders/2")
    else:
        sentinel = Sentinel([("127.0.0.1", port)], socket_connect_timeout=0.5)
        cache = RedisCache(client=sentinel.master_for("orders", db=2, password="master-password"))
    assert requests.get(server.api_url(), auth=make_auth(cache=cache)).ok
    (warning,) = _warnings(chaveiro_logs)
    assert f"token cache at Redis 'orders'/2 via Sentinel 127.0.0.1:{port} failed" in warning
    assert "localhost" not in warning
    assert "master-password" not in chaveiro_logs.text + repr(cache)


def test_async_spellings_behind_sentinel(redis_sentinel_url: str):
    """Under asyncio, a Sentinel cache runs its sync client in threads: it works the same."""

    async def main() -> None:
        cache = RedisCache(redis_sentinel_url)
        token = _token()
        await cache.aset("k", token)
        assert await cache.aget("k") == token
        async with cache.alock("k", 5) as held:
            assert held is True

    anyio.run(main)
