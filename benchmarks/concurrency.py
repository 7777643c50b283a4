"""Token-endpoint hits under many threads and tasks, and how long the event loop is held.

1. 32 threads call the API for 7 s with 2 s tokens: token requests and failed calls,
   with the default leeway (capped at half the lifetime: 1 s) and with leeway 0.
2. 500 asyncio tasks at a cold start against a 100 ms token endpoint, with httpx and with
   httpx2 (each installed one): token requests, wall time, and the longest time one step
   held the event loop, next to a fixed-header client of the same library.

Figures, not assertions. Every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import threading
import time
from collections.abc import Generator
from types import ModuleType
from typing import Any

import requests

from chaveiro import ClientCredentialsAuth
from chaveiro._caches import default_cache
from chaveiro._manager import reset_state
from chaveiro.testing import FakeTokenServer

THREADS = 32
SECONDS = 7.0
LIFETIME = 2.0
TASKS = 500


def fixed_header(library: ModuleType, header: str) -> Any:
    """The smallest ``library.Auth``: a fixed header."""

    class FixedHeader(library.Auth):  # type: ignore[misc,name-defined]
        def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            request.headers["Authorization"] = header
            yield request

    return FixedHeader()


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


async def burst(library: ModuleType, auth: Any, url: str) -> tuple[float, float, int]:
    """(wall time, longest loop step, 200 answers) of TASKS concurrent calls."""
    limits = library.Limits(max_connections=100)
    async with library.AsyncClient(auth=auth, limits=limits, timeout=30) as client:
        with StepTimer() as timer:
            start = time.perf_counter()
            responses = await asyncio.gather(*(client.get(url) for _ in range(TASKS)))
            wall = time.perf_counter() - start
    return wall, timer.worst, sum(r.status_code == 200 for r in responses)


def tasks_run(library: ModuleType) -> None:
    reset_state()
    default_cache().clear()
    with FakeTokenServer(token_delay=0.1) as server:
        server.add_client("bench", "bench-secret")
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
        header = fixed_header(library, auth.get_token().authorization)
        fixed = asyncio.run(burst(library, header, server.api_url()))
        reset_state()
        default_cache().clear()
        server.reset_counters()
        ours = asyncio.run(burst(library, auth, server.api_url()))
        print(f"  {library.__name__}")
        for name, (wall, lag, ok) in (("fixed header", fixed), ("chaveiro", ours)):
            print(
                f"    {name:<13} {ok}/{TASKS} ok in {wall:5.2f} s,"
                f" longest loop step {lag * 1000:6.1f} ms"
            )
        print(
            f"    ratio chaveiro / fixed header: wall {ours[0] / fixed[0]:.2f},"
            f" longest step {ours[1] / fixed[1]:.2f}; token requests {server.token_requests}"
            " (endpoint latency 100 ms)"
        )


def main() -> None:
    print(f"{THREADS} threads x {SECONDS:g} s, {LIFETIME:g} s tokens")
    threads_run(None)
    threads_run(0.0)
    print(f"{TASKS} asyncio tasks at a cold start")
    for name in ("httpx", "httpx2"):
        if importlib.util.find_spec(name) is not None:
            tasks_run(importlib.import_module(name))


if __name__ == "__main__":
    main()
