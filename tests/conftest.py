"""Shared fixtures: a real token server on 127.0.0.1, clean chaveiro state, a secret scan."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
import trustme

if os.environ.get("CHAVEIRO_TEST_HTTPX") == "httpx2":  # the httpx2 sessions of noxfile.py
    import sys

    import httpcore2
    import httpx2

    if hasattr(httpx2, "alias_httpx"):
        httpx2.alias_httpx()  # every ``import httpx`` below is httpx2
    else:  # before alias_httpx(), the same by hand
        sys.modules["httpx"], sys.modules["httpcore"] = httpx2, httpcore2

from chaveiro import ClientCredentialsAuth
from chaveiro._manager import wait_for_renewals
from chaveiro.testing import FakeTokenServer, reset
from tests._redis_servers import RedisCluster, RedisSentinel, RedisServer

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "FakeClock", "RedisServer", "join_renewals"]

CLIENT_ID = "app-client"
CLIENT_SECRET = "s3cr3t-Value-That-Must-Never-Leak-0123456789"


def join_renewals() -> None:
    """Wait for every background token renewal to finish (they are daemon threads)."""
    assert wait_for_renewals(), "a background renewal did not finish"


class FakeClock:
    """A wall clock the test moves by hand (``clock.now += 3600``)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_chaveiro_state() -> Iterator[None]:
    """Every test starts with an empty process-wide cache and no flights or cool-downs."""
    reset()
    yield
    reset()  # waits for background renewals first


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["httpx", "httpx2", "httpxyz"])
def hx(request: pytest.FixtureRequest) -> ModuleType:
    """httpx, httpx2 and httpxyz: the libraries of the httpx family (each where installed)."""
    return pytest.importorskip(str(request.param))


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer() as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private certificate authority for TLS tests."""
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[FakeTokenServer]:
    """The fake token server over HTTPS, with a certificate from ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with FakeTokenServer(ssl_context=context) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


@pytest.fixture
def make_auth(server: FakeTokenServer):
    """Build a generic auth object against the fake server's RFC 6749 endpoint."""

    def make(**kwargs: object) -> ClientCredentialsAuth:
        options: dict[str, object] = {
            "token_url": server.oauth_token_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        options.update(kwargs)
        return ClientCredentialsAuth(**options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def chaveiro_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="chaveiro")
    return caplog


def assert_no_secrets(texts: list[str], secrets: list[str]) -> None:
    """Fail if any secret (client secret, issued token) occurs in any text."""
    for secret in secrets:
        assert secret, "an empty secret would match everything"
        for text in texts:
            assert secret not in text, f"secret leaked into: {text[:200]!r}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis-server, emptied for this test."""
    redis_server.client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The URL of one node of the session's 3-node Redis Cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    sentinel = RedisSentinel()
    yield sentinel
    sentinel.stop()


@pytest.fixture
def redis_sentinel_url(redis_sentinel: RedisSentinel) -> str:
    """``redis+sentinel://`` naming the session's Sentinel and its master, emptied for this test."""
    redis_sentinel.master.client.flushall()
    return redis_sentinel.url
