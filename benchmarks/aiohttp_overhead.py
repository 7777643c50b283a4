"""chaveiro as an aiohttp client middleware, next to a middleware that sets a fixed header.

    .venv/bin/python benchmarks/aiohttp_overhead.py

1. End to end, warm token: µs per request against a local aiohttp.web API that
   runs in another process, sequential and 50 at a time (median of interleaved
   rounds).                                                   target: <= 1.03x
2. 500 tasks at a cold start against a 100 ms token endpoint, in interleaved
   bursts: token requests (target: 1 per burst) and the longest time one step
   held the event loop, next to the fixed-header middleware's; with the heap as
   it is, and frozen out of the garbage collector's reach (its full collections
   are most of the longest steps of both).

Figures, not assertions. Every loop is bounded; the run takes about a minute.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from chaveiro import ClientCredentialsAuth
from chaveiro._caches import default_cache
from chaveiro._manager import reset_state
from chaveiro.testing import FakeTokenServer

sys.path.insert(0, str(Path(__file__).parent))
from concurrency import StepTimer  # the same loop-step timer as for httpx

ROUNDS = 7
SEQUENTIAL = 400
BATCHES, BATCH = 8, 50
TASKS = 500
BURSTS = 5


def _serve_api(ready: multiprocessing.Queue[int]) -> None:
    """The API, in a process of its own: 200 to anything with a bearer token."""

    async def handle(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization", "").startswith("Bearer ")
        return web.json_response({"ok": ok}, status=200 if ok else 401)

    async def serve() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.put(runner.addresses[0][1])
        await asyncio.sleep(600)  # the parent terminates us long before

    asyncio.run(serve())


def fixed_header(header: str) -> aiohttp.ClientMiddlewareType:
    """The smallest middleware: a fixed Authorization header."""

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        request.headers["Authorization"] = header
        return await handler(request)

    return middleware


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def end_to_end(auth: ClientCredentialsAuth, header: str, url: str) -> None:
    floor = aiohttp.ClientSession(middlewares=(fixed_header(header),))
    ours = aiohttp.ClientSession(middlewares=(auth,))

    def sequential(session: aiohttp.ClientSession) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            start = time.perf_counter()
            for _ in range(SEQUENTIAL):
                await _get(session, url)
            return (time.perf_counter() - start) / SEQUENTIAL * 1e6

        return run

    def concurrent(session: aiohttp.ClientSession) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            start = time.perf_counter()
            for _ in range(BATCHES):
                await asyncio.gather(*(_get(session, url) for _ in range(BATCH)))
            return (time.perf_counter() - start) / (BATCHES * BATCH) * 1e6

        return run

    variants = {
        "sequential fixed header": sequential(floor),
        "sequential chaveiro": sequential(ours),
        "50 at a time fixed header": concurrent(floor),
        "50 at a time chaveiro": concurrent(ours),
    }
    for run in variants.values():  # warm the pools
        await run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():  # interleaved: drift hits every variant alike
            samples[name].append(await run())
    figures = {name: statistics.median(values) for name, values in samples.items()}
    await floor.close()
    await ours.close()
    print("end to end, warm token (µs/request, median of rounds)")
    for name, value in figures.items():
        print(f"  {name:<28} {value:8.1f}")
    for kind in ("sequential", "50 at a time"):
        ratio = figures[f"{kind} chaveiro"] / figures[f"{kind} fixed header"]
        print(f"  ratio {kind}: {ratio:.3f}x (target <= 1.03x)")


async def burst(middleware: aiohttp.ClientMiddlewareType, url: str) -> tuple[float, int]:
    gc.collect()  # every burst starts from the same heap
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
        with StepTimer() as timer:
            codes = await asyncio.gather(*(_get(session, url) for _ in range(TASKS)))
    return timer.worst, sum(code == 200 for code in codes)


def cold_start(url: str, *, frozen: bool) -> None:
    """Interleaved bursts: the longest step of each, median and worst over the bursts.

    The longest steps are often the garbage collector's full collections, which
    scan the whole heap and come sooner the more a burst allocates. ``frozen``
    moves the heap out of its reach first (``gc.freeze()``), so that what is left
    is the code's own steps.
    """
    if frozen:
        gc.collect()
        gc.freeze()
    lags: dict[str, list[float]] = {"fixed header": [], "chaveiro": []}
    requests_per_burst: list[int] = []
    failed = 0
    with FakeTokenServer(token_delay=0.1) as server:
        server.add_client("bench", "bench-secret")
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
        header = auth.get_token().authorization
        for _ in range(BURSTS):
            lag, ok = asyncio.run(burst(fixed_header(header), url))
            lags["fixed header"].append(lag)
            failed += TASKS - ok
            reset_state()  # a cold start: no token anywhere
            default_cache().clear()
            server.reset_counters()
            lag, ok = asyncio.run(burst(auth, url))
            lags["chaveiro"].append(lag)
            failed += TASKS - ok
            requests_per_burst.append(server.token_requests)
    if frozen:
        gc.unfreeze()
    heap = "heap frozen" if frozen else "heap as it is"
    print(f"{TASKS} tasks at a cold start, {BURSTS} bursts each, {heap} (token endpoint: 100 ms)")
    for name, values in lags.items():
        print(
            f"  {name:<13} longest loop step: median {statistics.median(values) * 1000:5.1f} ms,"
            f" worst {max(values) * 1000:5.1f} ms"
        )
    ratio = statistics.median(lags["chaveiro"]) / statistics.median(lags["fixed header"])
    print(f"  median longest step ratio: {ratio:.2f}x; failed requests: {failed}")
    print(f"  token requests per chaveiro burst: {requests_per_burst} (target 1 each)")


def main() -> None:
    ready: multiprocessing.Queue[int] = multiprocessing.Queue()
    api = multiprocessing.Process(target=_serve_api, args=(ready,), daemon=True)
    api.start()
    try:
        url = f"http://127.0.0.1:{ready.get(timeout=30)}/api/orders"
        with FakeTokenServer() as server:
            server.add_client("bench", "bench-secret")
            auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
            header = auth.get_token().authorization
            asyncio.run(end_to_end(auth, header, url))
            print(f"  token requests: {server.token_requests}")
        cold_start(url, frozen=False)
        cold_start(url, frozen=True)
    finally:
        api.terminate()
        api.join(10)


if __name__ == "__main__":
    main()
