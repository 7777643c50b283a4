"""Shared fixtures: a real token server on 127.0.0.1, clean chaveiro state, a secret scan."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
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


@pytest.fixture(params=["httpx", "httpx2"])
def hx(request: pytest.FixtureRequest) -> ModuleType:
    """httpx, then httpx2: the libraries of the httpx family (skipped where not installed)."""
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


_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


class RedisServer:
    """A real redis-server on a free 127.0.0.1 port, without persistence."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        try:
            import redis  # noqa: PLC0415 - the optional dependency
        except ImportError:
            executable = None
        if executable is None:
            message = (
                "redis-server or the redis package is missing (scripts/bootstrap installs both)"
            )
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        for _ in range(5):  # another process may grab the free port first
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", *_NO_PERSISTENCE],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            for _ in range(200):
                if self.process.poll() is not None:
                    break
                try:
                    self.client.ping()
                except redis.ConnectionError:
                    time.sleep(0.025)
                else:
                    return
            self.stop()
        pytest.fail("redis-server did not start")

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


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
