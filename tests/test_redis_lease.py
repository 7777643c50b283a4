"""The Redis token lock against a real redis-server: a short lease, kept alive by a live holder.

A holder killed mid-fetch delays the next process by one lease, not by its whole
timeout; a live holder keeps its lock however long it fetches; a lease is only ever
extended or freed by its own holder; and a Redis user without EVALSHA/EVAL locks
in two steps, with one warning.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import pytest
import redis
import requests

from chaveiro import ConfigurationError, RedisCache
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock, RedisServer

LOCK = "chaveiro:lock:k"
NO_SCRIPTS_USER = "chaveiro-no-scripts"

HOLDER = """
import sys
from chaveiro import ClientCredentialsAuth, RedisCache

token_url, client_id, client_secret, redis_url = sys.argv[1:]
auth = ClientCredentialsAuth(token_url, client_id, client_secret, cache=RedisCache(redis_url))
auth.get_token()  # the token endpoint holds this request until the process is killed
"""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as raw:
        yield raw


@pytest.fixture
def no_scripts_url(redis_server: RedisServer, redis_url: str) -> Iterator[str]:
    """A Redis user that may run every command but EVALSHA and EVAL."""
    redis_server.client.execute_command(
        *("ACL", "SETUSER", NO_SCRIPTS_USER, "reset", "on", ">no-scripts-password"),
        *("~*", "&*", "+@all", "-evalsha", "-eval"),
    )
    yield f"redis://{NO_SCRIPTS_USER}:no-scripts-password@127.0.0.1:{redis_server.port}/0"
    redis_server.client.execute_command("ACL", "DELUSER", NO_SCRIPTS_USER)


def _wait_for(condition: object, what: str) -> None:
    for _ in range(600):  # 30 s at most
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_a_holder_killed_mid_fetch_delays_the_next_process_by_one_lease(
    server: FakeTokenServer,
    make_auth,
    redis_url: str,
    client: redis.Redis,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """SIGKILL the process fetching under the lock: the next one gets the lock within a lease.

    The holder (another process, default settings) takes the lock and waits on a token
    endpoint that never answers it. Killed then, it renews its lease no more: the lock
    has at most 3 s to live, and the next process, which waits up to 10 s, takes it and
    fetches its token. With a lease as long as the holder's wait (25 s), it gave up.
    """
    server.fail(Failure.slow(60), times=1)
    command = [sys.executable, "-c", HOLDER, server.oauth_token_url, CLIENT_ID, CLIENT_SECRET]
    holder = subprocess.Popen([*command, redis_url], stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: server.token_requests == 1, "the holder's token request")
        (lock,) = client.keys("chaveiro:lock:*")
        lease_left_ms = client.pttl(lock)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    token = make_auth(cache=RedisCache(redis_url), wait_timeout=10).get_token()
    assert 0 < lease_left_ms <= 3000
    assert server.token_requests == 2
    assert token.access_token == server.issued_tokens[-1]
    assert "gave up waiting" not in chaveiro_logs.text
    assert client.keys("chaveiro:lock:*") == []  # released by the next process


@pytest.mark.parametrize("how", ["thread", "asyncio", "trio"])
def test_a_live_holder_keeps_its_lock_past_its_lease(redis_url: str, client: redis.Redis, how: str):
    """Held for three leases, sync or async: nobody else gets the lock; its TTL stays short."""
    lease = 0.6
    cache = RedisCache(redis_url, lock_lease=lease)
    others: list[bool] = []
    ttls: list[int] = []

    def look_twice() -> None:
        for _ in range(2):
            time.sleep(1.5 * lease)
            with RedisCache(redis_url).lock("k", 0) as other:
                others.append(other)
            ttls.append(client.pttl(LOCK))

    if how == "thread":
        with cache.lock("k", 10) as held:
            look_twice()
    else:

        async def hold() -> bool:
            async with cache.alock("k", 10) as held:
                await anyio.to_thread.run_sync(look_twice)
            return held

        held = anyio.run(hold, backend=how)
    assert held is True
    assert others == [False, False]
    assert all(0 < ttl <= lease * 1000 for ttl in ttls)
    assert client.exists(LOCK) == 0


@pytest.mark.parametrize("user", ["default", "without scripts"])
def test_a_lease_extends_and_frees_only_its_own_lock(
    redis_url: str, client: redis.Redis, user: str, request: pytest.FixtureRequest
):
    """Once another holder has the key, our renewals and our release leave it alone."""
    url = redis_url if user == "default" else request.getfixturevalue("no_scripts_url")
    cache = RedisCache(url, lock_lease=0.3)
    with cache.lock("k", 10) as held:
        assert held is True
        client.set(LOCK, b"another-holder")  # our lease ran out, and another took the lock
        time.sleep(0.5)  # the renewal thread looks at least once more
        assert client.pttl(LOCK) == -1  # it gave the other holder's key no TTL
    assert client.get(LOCK) == b"another-holder"


def test_a_lock_is_not_kept_past_its_timeout(redis_url: str, client: redis.Redis):
    """A holder still busy after the lock's timeout renews it no more: it lapses."""
    with RedisCache(redis_url, lock_lease=0.2).lock("k", 0.3) as held:
        assert held is True
        _wait_for(lambda: client.exists(LOCK) == 0, "the lock to lapse")


def test_a_user_without_scripts_gets_one_warning_and_no_stall(
    server: FakeTokenServer,
    make_auth,
    no_scripts_url: str,
    client: redis.Redis,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """ACL -evalsha -eval: every lock is freed at once (not left to its lease); one warning."""
    clock = FakeClock()
    for _ in range(3):  # three renewals, each by a new cache (another process)
        auth = make_auth(cache=RedisCache(no_scripts_url), clock=clock)
        assert requests.get(server.api_url(), auth=auth).ok
        assert client.keys("chaveiro:lock:*") == []
        clock.now += 3600  # the next request needs a new token
    warnings = [r.getMessage() for r in chaveiro_logs.records if r.levelno >= logging.WARNING]
    assert server.token_requests == 3
    assert len(warnings) == 1
    assert "may not run EVALSHA or EVAL" in warnings[0]
    assert "ACL SETUSER <user> +evalsha +eval" in warnings[0]
    assert "no-scripts-password" not in chaveiro_logs.text


@pytest.mark.parametrize("lease", [0, 0.05, -1, float("nan"), float("inf"), "3"])
def test_lock_lease_must_be_a_sensible_number(lease: object):
    with pytest.raises(ConfigurationError, match="lock_lease"):
        RedisCache("redis://127.0.0.1:1/0", lock_lease=lease)  # type: ignore[arg-type]
