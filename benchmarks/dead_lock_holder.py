"""A Redis lock holder killed mid-fetch: how long the next process waits for its token.

Each round: a holder process takes the RedisCache lock and sends its token
request, which the token endpoint holds; the holder is SIGKILLed (as by the OOM
killer or a pod eviction); this process then asks for a token with a cache of its
own (another machine, in effect) and times it from the kill. The baseline is the
same request with nobody holding the lock, measured in the same run; the token
endpoint answers every request after ``LATENCY`` seconds, as a distant provider
would. The difference is what the dead holder costs: at most one lease
(``lock_lease``, 3 s by default) plus a lock poll.

Needs redis-server on PATH (scripts/bootstrap installs it). Figures, not
assertions; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from chaveiro import ClientCredentialsAuth, RedisCache
from chaveiro.testing import Failure, FakeTokenServer, reset

sys.path.insert(0, str(Path(__file__).parent))
from caches import start_redis  # the same redis-server as for the cache figures

ROUNDS = 3
LATENCY = 0.2
HOLDER = """
import sys
from chaveiro import ClientCredentialsAuth, RedisCache

token_url, redis_url = sys.argv[1:]
auth = ClientCredentialsAuth(token_url, "bench", "bench-secret", cache=RedisCache(redis_url))
auth.get_token()  # held by the token endpoint until the process is killed
"""


def next_token_seconds(server: FakeTokenServer, redis_url: str) -> float:
    """Seconds from asking to holding a token, with a fresh cache and nothing in Redis."""
    reset()
    auth = ClientCredentialsAuth(
        server.oauth_token_url, "bench", "bench-secret", cache=RedisCache(redis_url)
    )
    start = time.perf_counter()
    auth.get_token()
    return time.perf_counter() - start


def after_a_dead_holder(server: FakeTokenServer, redis_url: str, client: redis.Redis) -> float:
    """Seconds from the holder's SIGKILL to the next process holding a token."""
    client.flushall()
    server.reset_counters()
    server.fail(Failure.slow(60), times=1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, server.oauth_token_url, redis_url])
    try:
        deadline = time.monotonic() + 30
        while server.token_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.perf_counter()
        reset()
        auth = ClientCredentialsAuth(
            server.oauth_token_url, "bench", "bench-secret", cache=RedisCache(redis_url)
        )
        auth.get_token()
        return time.perf_counter() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def main() -> None:
    redis_proc, redis_url = start_redis()
    if redis_proc is None:
        print("redis-server is not on PATH: nothing to measure")
        return
    try:
        with FakeTokenServer() as server, redis.Redis.from_url(redis_url) as client:
            server.add_client("bench", "bench-secret")
            server.token_delay = LATENCY
            print(f"token endpoint latency {LATENCY:g} s; RedisCache lock_lease 3 s (default)")
            print(f"  {'round':<6} {'baseline s':>10} {'after kill s':>13} {'on top s':>9}")
            for n in range(ROUNDS):
                client.flushall()
                base = next_token_seconds(server, redis_url)
                dead = after_a_dead_holder(server, redis_url, client)
                print(f"  {n + 1:<6} {base:>10.2f} {dead:>13.2f} {dead - base:>9.2f}")
            print("  (before the lease: the next process waited the holder's 25 s wait_timeout)")
    finally:
        redis_proc.terminate()
        redis_proc.wait()


if __name__ == "__main__":
    main()
