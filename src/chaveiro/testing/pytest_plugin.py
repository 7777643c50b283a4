"""pytest fixtures for code that uses chaveiro (loaded automatically once installed).

- ``fake_token_server``: a running :class:`~chaveiro.testing.FakeTokenServer` with one
  registered client, ``TEST_CLIENT_ID`` / ``TEST_CLIENT_SECRET``; chaveiro's in-process
  tokens are forgotten before and after the test, so tests do not leak tokens into each
  other.
- ``fake_provider_env``: ``fake_token_server`` plus every provider's environment
  variables pointing at it, so ``CidadaoAuth.from_env()`` (and the others) in the
  code under test talk to the fake server unchanged.
- ``chaveiro_reset``: only the forgetting part, for tests that build their own server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from chaveiro.testing._server import FakeTokenServer

# pytest loads this plugin at every start, in every project that has chaveiro installed:
# the fake server (cryptography, joserfc) and chaveiro's state load when a fixture is used.

__all__ = [
    "TEST_CLIENT_ID",
    "TEST_CLIENT_SECRET",
    "chaveiro_reset",
    "fake_provider_env",
    "fake_token_server",
]

TEST_CLIENT_ID = "test-client"
TEST_CLIENT_SECRET = "test-secret-0123456789"


@pytest.fixture
def chaveiro_reset() -> Iterator[None]:
    """Forget every token, flight and cool-down chaveiro holds in this process."""
    from chaveiro.testing._state import reset  # noqa: PLC0415 - see above

    reset()
    yield
    reset()


@pytest.fixture
def fake_token_server(chaveiro_reset: None) -> Iterator[FakeTokenServer]:
    """A running local provider (every dialect) with the test client registered."""
    from chaveiro.testing._server import FakeTokenServer  # noqa: PLC0415 - see above

    with FakeTokenServer() as server:
        server.add_client(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        yield server


@pytest.fixture
def fake_provider_env(
    fake_token_server: FakeTokenServer, monkeypatch: pytest.MonkeyPatch
) -> FakeTokenServer:
    """``fake_token_server``, with every provider's ``*_`` variables set to reach it."""
    server = fake_token_server
    variables = {
        "STACKSPOT_CLIENT_ID": TEST_CLIENT_ID,
        "STACKSPOT_CLIENT_KEY": TEST_CLIENT_SECRET,
        "STACKSPOT_REALM": "test",
        "STACKSPOT_TOKEN_URL": server.stackspot_token_url("test"),
        "CIDADAO_CLIENT_ID": TEST_CLIENT_ID,
        "CIDADAO_CLIENT_SECRET": TEST_CLIENT_SECRET,
        "CIDADAO_SCOPE": "test.read",
        "CIDADAO_TOKEN_URL": server.cidadao_token_url,
        "BITIZE_CONSUMER_KEY": TEST_CLIENT_ID,
        "BITIZE_SECRET_KEY": TEST_CLIENT_SECRET,
        "BITIZE_TOKEN_URL": server.bitize_token_url,
        "SCOREPOSITIVO_CLIENT_ID": TEST_CLIENT_ID,
        "SCOREPOSITIVO_CLIENT_SECRET": TEST_CLIENT_SECRET,
        "SCOREPOSITIVO_TOKEN_URL": server.scorepositivo_token_url,
        "OAUTH_CLIENT_ID": TEST_CLIENT_ID,
        "OAUTH_CLIENT_SECRET": TEST_CLIENT_SECRET,
        "OAUTH_TOKEN_URL": server.oauth_token_url,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return server
