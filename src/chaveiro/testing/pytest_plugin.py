"""pytest fixtures for code that uses chaveiro (loaded automatically once installed).

- ``fake_token_server``: a running :class:`FakeTokenServer` with one registered client,
  ``TEST_CLIENT_ID`` / ``TEST_CLIENT_SECRET``; chaveiro's in-process tokens are forgotten
  before and after the test, so tests do not leak tokens into each other.
- ``chaveiro_reset``: only the forgetting part, for tests that build their own server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaveiro.testing._server import FakeTokenServer
from chaveiro.testing._state import reset

__all__ = ["TEST_CLIENT_ID", "TEST_CLIENT_SECRET", "chaveiro_reset", "fake_token_server"]

TEST_CLIENT_ID = "test-client"
TEST_CLIENT_SECRET = "test-secret-0123456789"


@pytest.fixture
def chaveiro_reset() -> Iterator[None]:
    """Forget every token, flight and cool-down chaveiro holds in this process."""
    reset()
    yield
    reset()


@pytest.fixture
def fake_token_server(chaveiro_reset: None) -> Iterator[FakeTokenServer]:
    """A running local provider (every dialect) with the test client registered."""
    with FakeTokenServer() as server:
        server.add_client(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        yield server
