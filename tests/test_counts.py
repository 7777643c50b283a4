"""Every token a request obtains is counted once: fetched, found in the cache, or reused.

The field: 300 requests at a cold start were counted as fetched 1, reused 100;
the 199 that waited for the first caller's fetch were counted nowhere, in
``auth.stats`` and in the OpenTelemetry reuse counter alike. They count as
reused now, and ``waited`` says how many of those waited.
"""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest
import requests

from chaveiro import Stats
from chaveiro.testing import FakeTokenServer
from tests.conftest import FakeClock

REQUESTS = 300


def added_up(stats: Stats) -> int:
    return stats.fetched + stats.cache_hits + stats.reused


def auth_steps_in_threads(auth: object, url: str, n: int) -> list[str]:
    """``n`` threads run the requests auth step at once; the headers they got."""
    barrier = threading.Barrier(n)
    headers: list[str] = []

    def worker() -> None:
        prepared = requests.Request("GET", url).prepare()
        barrier.wait(timeout=60)
        headers.append(auth(prepared).headers["Authorization"])  # type: ignore[operator]

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return headers


def test_threads_at_a_cold_start_add_up(server: FakeTokenServer, make_auth):
    server.token_delay = 0.3
    auth = make_auth()
    headers = auth_steps_in_threads(auth, server.api_url(), REQUESTS)
    assert len(headers) == REQUESTS
    assert len(set(headers)) == 1
    assert server.token_requests == 1
    stats = auth.stats
    assert stats.fetched == 1
    assert added_up(stats) == REQUESTS, stats
    assert 0 < stats.waited <= stats.reused, stats


def test_threads_after_expiry_add_up(server: FakeTokenServer, make_auth):
    """An expired token: every caller waits for one renewal, and each is counted."""
    clock = FakeClock()
    auth = make_auth(clock=clock)
    auth.get_token()
    clock.now += 3600
    server.token_delay = 0.3
    auth_steps_in_threads(auth, server.api_url(), 50)
    stats = auth.stats
    assert (stats.fetched, stats.renewed) == (2, 1)
    assert added_up(stats) == 1 + 50, stats
    assert stats.waited > 0, stats


@pytest.mark.anyio
async def test_tasks_at_a_cold_start_add_up(server: FakeTokenServer, make_auth):
    server.token_delay = 0.2
    auth = make_auth()
    codes: list[int] = []
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as client:

        async def one() -> None:
            codes.append((await client.get(server.api_url())).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(REQUESTS):
                group.start_soon(one)
    assert codes == [200] * REQUESTS
    assert server.token_requests == 1
    stats = auth.stats
    assert stats.fetched == 1
    assert added_up(stats) == REQUESTS, stats
    assert stats.waited > 0, stats


@pytest.mark.anyio
async def test_aget_token_tasks_at_a_cold_start_add_up(server: FakeTokenServer, make_auth):
    server.token_delay = 0.2
    auth = make_auth()
    async with httpx.AsyncClient() as client, anyio.create_task_group() as group:
        for _ in range(REQUESTS):
            group.start_soon(lambda: auth.aget_token(client=client))
    stats = auth.stats
    assert (server.token_requests, stats.fetched) == (1, 1)
    assert added_up(stats) == REQUESTS, stats
