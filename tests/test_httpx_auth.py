"""ClientCredentialsAuth with httpx (sync, asyncio and trio), over real HTTP."""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest
import requests

from chaveiro import (
    ClientCredentialsAuth,
    CredentialsRejectedError,
    TokenEndpointUnreachableError,
)
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import FakeClock


class CountingTransport(httpx.BaseTransport):
    """A user's custom transport: records every request it carries."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_sync_client_reuses_one_token(server: FakeTokenServer, make_auth):
    """httpx.Client: many requests, one token request."""
    with httpx.Client(auth=make_auth()) as client:
        for _ in range(50):
            assert client.get(server.api_url()).status_code == 200
    assert server.token_requests == 1


def test_token_request_goes_through_the_users_transport(server: FakeTokenServer, make_auth):
    """The token request travels through the client's own transport."""
    transport = CountingTransport()
    with httpx.Client(auth=make_auth(), transport=transport) as client:
        client.get(server.api_url())
    assert transport.urls == [server.oauth_token_url, server.api_url()]


def test_token_request_gets_the_users_timeout(server: FakeTokenServer, make_auth):
    """The user's timeout applies to the token request: a hung endpoint cannot hang the app."""
    server.token_delay = 2.0
    auth = make_auth(max_attempts=1)
    with (
        httpx.Client(auth=auth, timeout=0.3) as client,
        pytest.raises(TokenEndpointUnreachableError, match="did not answer in time"),
    ):
        client.get(server.api_url())


def test_sync_401_replay(server: FakeTokenServer, make_auth):
    """httpx.Client: a 401 renews the token and replays the request once."""
    with httpx.Client(auth=make_auth()) as client:
        client.get(server.api_url())
        server.revoke_all()
        response = client.post(server.api_url(), content=b"abc")
    assert response.status_code == 200
    assert response.json()["body_length"] == 3
    assert server.token_requests == 2


def test_sync_401_with_generator_body_is_not_replayed(server: FakeTokenServer, make_auth):
    """A streaming body cannot be replayed: the 401 goes back."""
    with httpx.Client(auth=make_auth()) as client:
        client.get(server.api_url())
        server.revoke_all()
        response = client.post(server.api_url(), content=(c for c in [b"a", b"b"]))
    assert response.status_code == 401
    assert server.token_requests == 1


def test_persistent_401_is_not_looped(server: FakeTokenServer, make_auth):
    """httpx: a second 401 goes back to the caller."""
    with httpx.Client(auth=make_auth()) as client:
        response = client.get(server.api_url("/api/x?status=401"))
    assert response.status_code == 401
    assert server.api_requests == 2


def test_raise_for_status_hook_cannot_break_typed_errors(server: FakeTokenServer, make_auth):
    """A user's raise_for_status event hook still gets our typed error for the token request."""

    def raise_for_status(response: httpx.Response) -> None:
        response.raise_for_status()

    auth = make_auth(client_secret="wrong")
    with (
        httpx.Client(auth=auth, event_hooks={"response": [raise_for_status]}) as client,
        pytest.raises(CredentialsRejectedError),
    ):
        client.get(server.api_url())


def test_connection_error_is_typed(make_auth):
    """httpx: an unreachable token endpoint raises our typed error."""
    auth = ClientCredentialsAuth("http://127.0.0.1:9/token", "id", "secret", max_attempts=1)
    with httpx.Client(auth=auth) as client, pytest.raises(TokenEndpointUnreachableError):
        client.get("http://127.0.0.1:9/api")


def test_sync_and_requests_share_one_object(server: FakeTokenServer, make_auth):
    """One auth object serves requests and httpx at once, with one token."""
    auth = make_auth()
    with httpx.Client(auth=auth) as client:
        client.get(server.api_url())
    requests.get(server.api_url(), auth=auth, timeout=5)
    assert server.token_requests == 1


def test_32_threads_on_httpx_make_one_request(server: FakeTokenServer, make_auth):
    """httpx.Client from many threads: one token request at a cold start."""
    auth = make_auth()
    server.token_delay = 0.2
    barrier = threading.Barrier(32)
    codes: list[int] = []
    with httpx.Client(auth=auth, limits=httpx.Limits(max_connections=64)) as client:

        def worker() -> None:
            barrier.wait()
            codes.append(client.get(server.api_url()).status_code)

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert codes == [200] * 32
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_async_client_reuses_one_token(server: FakeTokenServer, make_auth):
    """httpx.AsyncClient: many requests, one token request."""
    async with httpx.AsyncClient(auth=make_auth()) as client:
        for _ in range(20):
            assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_500_tasks_at_cold_start_make_one_request(server: FakeTokenServer, make_auth):
    """500 concurrent tasks with no token cause exactly one token request."""
    server.token_delay = 0.1
    codes: list[int] = []
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(auth=make_auth(), limits=limits, timeout=30) as client:

        async def one() -> None:
            codes.append((await client.get(server.api_url())).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(500):
                group.start_soon(one)
    assert codes == [200] * 500
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_async_16_concurrent_401s_make_one_renewal(server: FakeTokenServer, make_auth):
    """Concurrent 401s in one event loop renew once; all requests succeed."""
    auth = make_auth()
    async with httpx.AsyncClient(auth=auth) as client:
        await client.get(server.api_url())
        server.revoke_all()
        server.token_delay = 0.1
        codes: list[int] = []

        async def one() -> None:
            codes.append((await client.get(server.api_url())).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(one)
    assert codes == [200] * 16
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_async_401_with_generator_body_is_not_replayed(server: FakeTokenServer, make_auth):
    """Async streaming body: the 401 goes back."""

    async def body():
        yield b"abc"

    async with httpx.AsyncClient(auth=make_auth()) as client:
        await client.get(server.api_url())
        server.revoke_all()
        response = await client.post(server.api_url(), content=body())
    assert response.status_code == 401


@pytest.mark.anyio
async def test_async_renewal_before_expiry(server: FakeTokenServer, make_auth):
    """Async: the token is renewed inside the leeway window."""
    clock = FakeClock()
    async with httpx.AsyncClient(auth=make_auth(clock=clock)) as client:
        await client.get(server.api_url())
        clock.now += 3600 - 10
        await client.get(server.api_url())
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_aget_token(server: FakeTokenServer, make_auth):
    """aget_token() fetches once and then returns the shared token."""
    auth = make_auth()
    first = await auth.aget_token()
    assert await auth.aget_token() is first
    assert auth.get_token() is first
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_async_rejected_credentials(server: FakeTokenServer, make_auth):
    """Async: a wrong secret gives CredentialsRejectedError."""
    async with httpx.AsyncClient(auth=make_auth(client_secret="nope")) as client:
        with pytest.raises(CredentialsRejectedError):
            await client.get(server.api_url())


@pytest.mark.anyio
async def test_cancelled_leader_does_not_wedge_waiters(server: FakeTokenServer, make_auth):
    """If the task fetching the token is cancelled, the next caller fetches instead."""
    auth = make_auth()
    server.token_delay = 0.5
    async with httpx.AsyncClient(auth=auth) as client:
        with anyio.move_on_after(0.1):
            await client.get(server.api_url())
        server.token_delay = 0
        assert (await client.get(server.api_url())).status_code == 200


@pytest.mark.anyio
async def test_threads_and_event_loop_share_a_flight(server: FakeTokenServer, make_auth):
    """A thread and an async task needing the token at once cause one token request."""
    auth = make_auth()
    server.token_delay = 0.3
    result: list[int] = []

    def in_thread() -> None:
        with httpx.Client(auth=auth) as client:
            result.append(client.get(server.api_url()).status_code)

    thread = threading.Thread(target=in_thread)
    thread.start()
    async with httpx.AsyncClient(auth=auth) as client:
        result.append((await client.get(server.api_url())).status_code)
    await anyio.to_thread.run_sync(thread.join)
    assert result == [200, 200]
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_async_retry_on_429(server: FakeTokenServer, make_auth):
    """Async: a 429 with Retry-After is retried after the pause."""
    server.fail(Failure.too_many(retry_after="0.1"), times=1)
    async with httpx.AsyncClient(auth=make_auth()) as client:
        assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 2
