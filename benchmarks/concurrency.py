"""Token-endpoint hits under many threads and tasks, and how long the event loop is held.

1. 32 threads call the API for 7 s with 2 s tokens: token requests and failed calls,
   with the default leeway (capped at half the lifetime: 1 s) and with leeway 0.
2. 500 asyncio tasks at a cold start against a 100 ms token endpoint: token requests,
   and the longest time one step held the event loop, next to a fixed-header client.

Figures, not assertions. Every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator

import httpx
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro._caches import default_cache
from chaveiro._manager import reset_state
from chaveiro.testing import FakeTokenServer

THREADS = 32
SECONDS = 7.0
LIFETIME = 2.0
TASKS = 500


class FixedHeader(httpx.Auth):
    def __init__(self, header: str) -> None:
        self.header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


def threads_run(leeway: float | None) -> None:
    reset_state()
    default_cache().clear()
    with FakeTokenServer(lifetime=LIFETIME) as server:
        server.add_client("bench", "bench-secret")
        options = {} if leeway is None else {"leeway": leeway}
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret", **options)
        failures = 0
        calls = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + SECONDS

        def worker() -> None:
            nonlocal failures, calls
            session = requests.Session()
            session.auth = auth
            while time.monotonic() < stop_at:
                ok = session.get(server.api_url()).status_code == 200
                with lock:
                    calls += 1
                    failures += not ok

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        effective = LIFETIME / 2 if leeway is None else min(leeway, LIFETIME / 2)
        bound = SECONDS / (LIFETIME - effective)
        label = "default leeway (1 s effective)" if leeway is None else f"leeway {leeway:g}"
        print(
            f"  {label:<32} token requests {server.token_requests:>3}"
            f" (one per {LIFETIME - effective:g} s would be {bound:.1f}),"
            f" API calls {calls}, failed {failures}, replayed {auth.stats.replayed}"
        )


class StepTimer:
    """Times every callback the event loop runs (each task step is one)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._original = asyncio.events.Handle._run

    def __enter__(self) -> StepTimer:
        timer, original = self, self._original

        def timed(handle: asyncio.events.Handle) -> None:
            start = time.perf_counter()
            original(handle)
            timer.worst = max(timer.worst, time.perf_counter() - start)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


async def burst(auth: httpx.Auth, url: str) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as client:
        with StepTimer() as timer:
            responses = await asyncio.gather(*(client.get(url) for _ in range(TASKS)))
    return timer.worst, sum(r.status_code == 200 for r in responses)


def tasks_run() -> None:
    reset_state()
    default_cache().clear()
    with FakeTokenServer(token_delay=0.1) as server:
        server.add_client("bench", "bench-secret")
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
        header = FixedHeader(auth.get_token().authorization)
        fixed_lag, fixed_ok = asyncio.run(burst(header, server.api_url()))
        reset_state()
        default_cache().clear()
        server.reset_counters()
        ours_lag, ours_ok = asyncio.run(burst(auth, server.api_url()))
        print(
            f"  fixed header: {fixed_ok}/{TASKS} ok, longest loop step {fixed_lag * 1000:.1f} ms\n"
            f"  chaveiro:     {ours_ok}/{TASKS} ok, longest loop step {ours_lag * 1000:.1f} ms,"
            f" token requests {server.token_requests} (endpoint latency 100 ms)"
        )


def main() -> None:
    print(f"{THREADS} threads x {SECONDS:g} s, {LIFETIME:g} s tokens")
    threads_run(None)
    threads_run(0.0)
    print(f"{TASKS} asyncio tasks at a cold start")
    tasks_run()


if __name__ == "__main__":
    main()
