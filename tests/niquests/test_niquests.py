"""The same auth object in niquests: its sync Session as with requests; its AsyncSession refused.

Run by ``nox -s niquests`` (niquests replaces urllib3 with urllib3-future).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import niquests
import pytest

from chaveiro import ConfigurationError
from chaveiro.testing import FakeTokenServer


@pytest.fixture
def session(make_auth) -> Iterator[niquests.Session]:
    with niquests.Session() as made:
        made.auth = make_auth()
        yield made


def test_one_token_for_many_requests(server: FakeTokenServer, session: niquests.Session):
    """niquests.Session: 50 requests, one token request."""
    codes = [session.get(server.api_url(), timeout=10).status_code for _ in range(50)]
    assert codes == [200] * 50
    assert server.token_requests == 1


def test_401_renews_and_replays_once(server: FakeTokenServer, session: niquests.Session):
    """A refused token: renewed, and the request replayed once with its body."""
    session.get(server.api_url(), timeout=10)
    server.revoke_all()
    response = session.post(server.api_url(), data=b"abc", timeout=10)
    assert response.status_code == 200
    assert response.json()["body_length"] == 3
    assert [r.status_code for r in response.history] == [401]
    assert server.token_requests == 2


def test_a_file_body_is_rewound_and_replayed(server: FakeTokenServer, session: niquests.Session):
    session.get(server.api_url(), timeout=10)
    server.revoke_all()
    response = session.post(server.api_url(), data=io.BytesIO(b"abcdef"), timeout=10)
    assert response.status_code == 200
    assert response.json()["body_length"] == 6


def test_a_generator_body_is_not_replayed(server: FakeTokenServer, session: niquests.Session):
    session.get(server.api_url(), timeout=10)
    server.revoke_all()
    response = session.post(server.api_url(), data=(c for c in [b"a", b"b"]), timeout=10)
    assert response.status_code == 401
    assert server.token_requests == 1


def test_replay_can_be_switched_off(server: FakeTokenServer, make_auth):
    with niquests.Session() as session:
        session.auth = make_auth(replay_on_401=False)
        session.get(server.api_url(), timeout=10)
        server.revoke_all()
        assert session.get(server.api_url(), timeout=10).status_code == 401
    assert server.api_requests == 2


def test_a_redirect_to_another_host_carries_no_token(
    server: FakeTokenServer, session: niquests.Session
):
    with FakeTokenServer() as other:
        target = other.url.replace("127.0.0.1", "localhost") + "/api/landing"
        response = session.get(server.api_url("/api/redirect"), params={"to": target}, timeout=10)
        assert response.status_code == 401
        assert "authorization" not in other.api_request_log[0].headers


def test_the_session_works_from_a_thread_of_an_event_loop(server: FakeTokenServer, make_auth):
    """niquests.Session in asyncio.to_thread: the loop's thread never waits for a token."""

    def call() -> int:
        with niquests.Session() as session:
            session.auth = make_auth()
            return session.get(server.api_url(), timeout=10).status_code

    async def main() -> int:
        return await asyncio.to_thread(call)

    assert asyncio.run(main()) == 200


@pytest.mark.parametrize("warm", [False, True], ids=["no token yet", "token held"])
def test_async_session_is_refused_with_a_clear_error(
    server: FakeTokenServer, make_auth, warm: bool
):
    """niquests.AsyncSession: a ConfigurationError at once, before any blocking token request.

    With a token held the loop would not block at first, but a 401 would: refused alike.
    """
    auth = make_auth()
    if warm:
        auth.get_token()

    async def main() -> None:
        async with niquests.AsyncSession() as session:
            with pytest.raises(ConfigurationError, match=r"httpx\.AsyncClient") as caught:
                await session.get(server.api_url(), auth=auth, timeout=10)
            assert "aiohttp.ClientSession(middlewares=(auth,))" in str(caught.value)

    asyncio.run(main())
    assert server.token_requests == (1 if warm else 0)
    assert server.api_requests == 0
