"""Shared token caches: token requests of a fleet, and what a cache lookup costs.

1. 8 processes call the API for 4 s with 2 s tokens, each with a MemoryCache of
   its own (no sharing), or sharing a FileCache or a RedisCache: token requests,
   and token requests per token lifetime. One process alone renews every L/2 = 1 s,
   so 2 per lifetime is what one process needs, and what a shared cache should give.
2. µs per ``get_token()`` with a warm token; µs for a cold start that finds the
   token in the shared cache (a new cache and auth object each time, as a new
   process would); µs per ``cache.get()`` / ``await cache.aget()``.

Needs redis-server on PATH for the Redis figures (scripts/bootstrap installs it).
Figures, not assertions; every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from chaveiro import ClientCredentialsAuth, FileCache, MemoryCache, RedisCache, TokenCache
from chaveiro.testing import FakeTokenServer

PROCESSES = 8
SECONDS = 4.0
LIFETIME = 2.0
CALLS = 2000
TIME_CAP = 2.0


def worker(settings: dict[str, str]) -> None:
    """One process of part 1: API calls until the end time read from stdin."""
    kind = settings["cache"]
    cache: TokenCache
    if kind == "file":
        cache = FileCache(settings["path"])
    elif kind == "redis":
        cache = RedisCache(settings["redis_url"])
    else:
        cache = MemoryCache()
    auth = ClientCredentialsAuth(settings["token_url"], "bench", "bench-secret", cache=cache)
    session = requests.Session()
    session.auth = auth
    print("ready", flush=True)
    end = float(sys.stdin.readline())
    failed = 0
    while time.time() < end:
        failed += session.get(settings["api_url"], timeout=10).status_code != 200
        time.sleep(0.02)
    print(json.dumps({"failed": failed}), flush=True)


def fleet(server: FakeTokenServer, **settings: str) -> tuple[int, int]:
    """Token requests and failed calls of PROCESSES workers running for SECONDS."""
    settings |= {"token_url": server.oauth_token_url, "api_url": server.api_url()}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.readline()
    server.reset_counters()
    end = time.time() + SECONDS
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{end!r}\n")
        proc.stdin.flush()
    failed = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=SECONDS + 60)
        failed += json.loads(out.strip().splitlines()[-1])["failed"]
    return server.token_requests, failed


def per_call(fn: Callable[[], object]) -> float:
    """µs per call, over CALLS calls or TIME_CAP seconds, whichever comes first."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < CALLS and time.perf_counter() - start < TIME_CAP:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def start_redis() -> tuple[subprocess.Popen[bytes] | None, str]:
    executable = shutil.which("redis-server")
    if executable is None:
        return None, ""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([executable, *options], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    with redis.Redis.from_url(url) as client:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
    return proc, url


def latency(server: FakeTokenServer, directory: str, redis_url: str) -> None:
    url = server.oauth_token_url
    server.reset_counters()

    def auth(cache: TokenCache) -> ClientCredentialsAuth:
        return ClientCredentialsAuth(url, "bench", "bench-secret", cache=cache)

    shared_client = redis.Redis.from_url(redis_url) if redis_url else None
    makers: dict[str, Callable[[], TokenCache]] = {
        "memory": MemoryCache,
        "file": lambda: FileCache(directory),
    }
    if shared_client is not None:
        makers["redis (pooled client)"] = lambda: RedisCache(client=shared_client)
        makers["redis (new connection)"] = lambda: RedisCache(redis_url)
    memory = MemoryCache()
    key = auth(memory)._manager.identity.key
    print("µs per call")
    print(f"  {'cache':<24} {'warm get_token':>15} {'cold start':>12} {'get':>8} {'aget':>8}")
    for name, make in makers.items():
        cache = memory if name == "memory" else make()
        warm = auth(cache)
        warm.get_token()
        warm_us = per_call(warm.get_token)
        if name == "memory":  # a new process has nothing in memory: a new auth object instead
            cold_us = per_call(lambda: auth(memory).get_token())
        else:
            cold_us = per_call(lambda make=make: auth(make()).get_token())  # type: ignore[misc]
        get_us = per_call(lambda cache=cache: cache.get(key))  # type: ignore[misc]

        async def aget_loop(cache: TokenCache = cache) -> float:
            await cache.aget(key)
            calls, start = 0, time.perf_counter()
            while calls < CALLS // 4 and time.perf_counter() - start < TIME_CAP:
                await cache.aget(key)
                calls += 1
            return (time.perf_counter() - start) / calls * 1e6

        aget_us = asyncio.run(aget_loop())
        print(f"  {name:<24} {warm_us:>15.2f} {cold_us:>12.1f} {get_us:>8.1f} {aget_us:>8.1f}")
    print(
        "  (cold start: a new cache and auth object find the token in the shared cache;"
        " for memory, a new auth object in the same process)"
    )
    print(f"  token requests during the latency runs: {server.token_requests} (one per cache kind)")
    if shared_client is not None:
        shared_client.close()


def main() -> None:
    redis_proc, redis_url = start_redis()
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeTokenServer(lifetime=LIFETIME) as server:
            server.add_client("bench", "bench-secret")
            path = str(Path(tmp) / "tokens")
            windows = SECONDS / LIFETIME
            print(f"{PROCESSES} processes x {SECONDS:g} s, {LIFETIME:g} s tokens")
            runs = {"memory": {}, "file": {"path": path}}
            if redis_url:
                runs["redis"] = {"redis_url": redis_url}
            for kind, extra in runs.items():
                count, failed = fleet(server, cache=kind, **extra)
                print(
                    f"  {kind:<8} token requests {count:>3}, per lifetime {count / windows:5.1f},"
                    f" failed calls {failed}"
                )
            ideal = int(SECONDS // (LIFETIME / 2)) + 1
            print(f"  (one process alone needs at most {ideal}: one per {LIFETIME / 2:g} s)")
            server.lifetime = 3600
            latency(server, path, redis_url)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
