"""Shared fixtures: a real token server on 127.0.0.1, clean chaveiro state, a secret scan."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from chaveiro import ClientCredentialsAuth
from chaveiro._manager import wait_for_renewals
from chaveiro.testing import FakeTokenServer, reset

CLIENT_ID = "app-client"
CLIENT_SECRET = "s3cr3t-Value-That-Must-Never-Leak-0123456789"


def join_renewals() -> None:
    """Wait for every background token renewal to finish (they are daemon threads)."""
    assert wait_for_renewals(), "a background renewal did not finish"


@pytest.fixture(autouse=True)
def _fresh_chaveiro_state() -> Iterator[None]:
    """Every test starts with an empty process-wide cache and no flights or cool-downs."""
    reset()
    yield
    reset()  # waits for background renewals first


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer() as srv:
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
