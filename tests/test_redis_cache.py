"""RedisCache against a real redis-server: sharing, expiry, locks, outages."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import redis.asyncio
import requests

from chaveiro import ConfigurationError, RedisCache
from chaveiro._token import Token
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_SECRET, FakeClock


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as raw:
        yield raw


def _token(access: str = "access-token-value", lifetime: float = 60) -> Token:
    return Token(access, time.time() + lifetime, time.time())


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "token cache" in r.getMessage()
    ]


def test_token_expires_from_redis_with_the_token(
    server: FakeTokenServer, make_auth, redis_url: str, client: redis.Redis
):
    """The token is stored under the prefix with a TTL equal to its remaining lifetime."""
    auth = make_auth(cache=RedisCache(redis_url))
    assert requests.get(server.api_url(), auth=auth).ok
    (key,) = client.keys("*")
    assert key == f"chaveiro:token:{auth._manager.identity.key}".encode()
    assert 3500 * 1000 < client.pttl(key) <= 3600 * 1000


def test_another_cache_object_reads_the_token(
    server: FakeTokenServer, make_auth, redis_url: str, client: redis.Redis
):
    """A second auth object over a second RedisCache (another machine) reuses the token."""
    requests.get(server.api_url(), auth=make_auth(cache=RedisCache(redis_url)))
    second = make_auth(cache=RedisCache(client=client))
    assert requests.get(server.api_url(), auth=second).ok
    assert server.token_requests == 1
    assert second.stats.cache_hits == 1


def test_prefixes_keep_apart(server: FakeTokenServer, make_auth, redis_url: str):
    """Caches with different prefixes do not see each other's tokens."""
    requests.get(server.api_url(), auth=make_auth(cache=RedisCache(redis_url, prefix="one:")))
    requests.get(server.api_url(), auth=make_auth(cache=RedisCache(redis_url, prefix="two:")))
    assert server.token_requests == 2


def test_stored_values_hold_no_client_secret(
    server: FakeTokenServer, make_auth, redis_url: str, client: redis.Redis
):
    """Keys and values in Redis hold the token but never the client secret."""
    requests.get(server.api_url(), auth=make_auth(cache=RedisCache(redis_url)))
    data = b"".join(key + (client.get(key) or b"") for key in client.keys("*"))
    assert server.issued_tokens[0].encode() in data
    assert CLIENT_SECRET.encode() not in data


def test_damaged_value_is_ignored_and_replaced(
    server: FakeTokenServer, make_auth, redis_url: str, client: redis.Redis
):
    """A value that is not a token reads as none; the renewal replaces it."""
    auth = make_auth(cache=RedisCache(redis_url))
    client.set(f"chaveiro:token:{auth._manager.identity.key}", b"\x00garbage")
    assert requests.get(server.api_url(), auth=auth).ok
    stored = RedisCache(redis_url).get(auth._manager.identity.key)
    assert stored is not None
    assert stored.access_token == server.issued_tokens[-1]


def test_lock_excludes_other_holders(redis_url: str):
    """While one cache object holds the lock, another gives up; once released, it gets it."""
    first, second = RedisCache(redis_url), RedisCache(redis_url)
    with first.lock("k", 5) as held:
        assert held is True
        with second.lock("k", 0.2) as other:
            assert other is False
    with second.lock("k", 5) as held:
        assert held is True


@pytest.mark.anyio
@pytest.mark.parametrize("made_from", ["url", "sync client", "async client"])
async def test_async_spellings(redis_url: str, made_from: str, anyio_backend: str):
    """aset/aget/alock work under asyncio and trio, however the cache was made."""
    sync_client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url) if made_from == "async client" else None
    try:
        if made_from == "url":
            cache = RedisCache(redis_url)
        else:
            cache = RedisCache(client=sync_client, async_client=async_client)
        token = _token()
        await cache.aset("k", token)
        assert await cache.aget("k") == token
        assert await RedisCache(redis_url).aget("k") == token
        async with cache.alock("k", 5) as held:
            assert held is True
            async with RedisCache(redis_url).alock("k", 0.2) as other:
                assert other is False
        async with RedisCache(redis_url).alock("k", 5) as held:
            assert held is True
    finally:
        sync_client.close()
        if async_client is not None and anyio_backend == "asyncio":  # unused under trio
            await async_client.aclose()


@pytest.mark.anyio
async def test_async_clients_share_one_token(server: FakeTokenServer, make_auth, redis_url: str):
    """httpx.AsyncClient with two auth objects over two RedisCache objects: one token request."""
    for _ in range(2):
        async with httpx.AsyncClient(auth=make_auth(cache=RedisCache(redis_url))) as client:
            assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 1


class SilentServer:
    """Accepts TCP connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.listener.settimeout(0.05)
        self.connections: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_redis() -> Iterator[SilentServer]:
    silent = SilentServer()
    yield silent
    silent.close()


def test_hanging_redis_is_asked_once_then_left_alone(
    server: FakeTokenServer,
    make_auth,
    silent_redis: SilentServer,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """A Redis that never answers: one timeout, then renewals skip it; one warning."""
    clock = FakeClock()
    cache = RedisCache(silent_redis.url, timeout=0.2, connect_timeout=0.2, retry_interval=60)
    session = requests.Session()
    session.auth = make_auth(cache=cache, clock=clock)
    for _ in range(5):
        assert session.get(server.api_url()).status_code == 200
        clock.now += 3600  # every request needs a new token
    assert server.token_requests == 5
    assert len(silent_redis.connections) == 1
    assert len(_cache_warnings(chaveiro_logs)) == 1
    cache.close()


def test_refused_connection_never_fails_a_request(
    server: FakeTokenServer, make_auth, chaveiro_logs: pytest.LogCaptureFixture
):
    """Nothing listening at the Redis address: requests succeed, one warning, no password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()
    cache = RedisCache(f"redis://:hunter2-password@127.0.0.1:{port}/0", retry_interval=0)
    session = requests.Session()
    session.auth = make_auth(cache=cache, clock=clock)
    for _ in range(3):
        assert session.get(server.api_url()).status_code == 200
        clock.now += 3600
    warnings = _cache_warnings(chaveiro_logs)
    assert len(warnings) == 1
    assert "hunter2" not in chaveiro_logs.text + repr(cache)


def test_needs_a_url_or_a_client(client: redis.Redis):
    """Neither or both of url= and client=, or a bad URL, is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        RedisCache()
    with pytest.raises(ConfigurationError):
        RedisCache("redis://127.0.0.1:1/0", client=client)
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisCache("http://127.0.0.1:1/0")


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    """Without redis installed, RedisCache says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"chaveiro\[redis\]"):
        RedisCache("redis://127.0.0.1:6379/0")


def test_import_chaveiro_does_not_import_redis():
    """import chaveiro works without redis and does not load it."""
    code = (
        "import sys; sys.modules['redis'] = None; import chaveiro;"
        " assert chaveiro.RedisCache; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"
