"""Shared caches across real processes: a fleet makes the token requests of one process.

The token server runs in the test process; workers (``_cache_worker.py``) are separate
Python processes that make API requests until a common end time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from chaveiro import FileCache, RedisCache
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, RedisServer

ROOT = Path(__file__).parent.parent
WORKERS = 8
DURATION = 5.0
LIFETIME = 2.0


def run_workers(
    server: FakeTokenServer,
    count: int,
    duration: float,
    *,
    during: Callable[[list[subprocess.Popen[str]]], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Start ``count`` workers, let them all run for ``duration`` seconds, return their reports."""
    settings = {
        "token_url": server.oauth_token_url,
        "api_url": server.api_url(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "per_request": False,
        "pause": 0.02,
        "path": "",
        "redis_url": "",
        **settings,
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests._cache_worker", json.dumps(settings)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        server.reset_counters()
        end = time.time() + duration  # no worker asks for a token before this line
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{end!r}\n")
            worker.stdin.flush()
        if during is not None:
            during(workers)
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=duration + 60)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                worker.communicate()
    return reports


@pytest.fixture
def short_lived(server: FakeTokenServer) -> FakeTokenServer:
    server.lifetime = LIFETIME
    return server


@pytest.mark.parametrize("per_request", [False, True], ids=["one auth", "auth per request"])
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_eight_processes_ask_no_more_than_one_would(
    short_lived: FakeTokenServer, kind: str, per_request: bool, tmp_path: Path, request
):
    """8 processes for 5 s, 2 s tokens: at most 6 token requests, the bound for one process.

    A token lives L = 2 s; the leeway is min(30, L/2) = 1 s, so a token is fresh for
    1 s from the moment its request left. Every renewal happens under the cache
    lock after reading the cache, so a new token request leaves only once the last
    stored token is stale: departures are more than 1 s apart. All fall within the
    D = 5 s run (plus milliseconds), hence at most floor(D / 1 s) + 1 = 6, which is
    what one process alone would need. At least ceil(D / L) = 3 tokens must exist,
    since the API refuses expired ones and every request succeeds.
    """
    where: dict[str, str] = {}
    if kind == "file":
        where["path"] = str(tmp_path / "cache")
    else:
        where["redis_url"] = request.getfixturevalue("redis_url")
    reports = run_workers(
        short_lived, WORKERS, DURATION, cache=kind, per_request=per_request, **where
    )
    assert [r["failed"] for r in reports] == [0] * WORKERS
    assert all(r["ok"] > 0 for r in reports)
    assert [r["warnings"] for r in reports] == [[]] * WORKERS
    assert 3 <= short_lived.token_requests <= 6


def test_redis_killed_mid_run_fails_no_request(short_lived: FakeTokenServer):
    """Redis dies while 4 processes use it: every request still succeeds, and each warns once."""
    short_lived.lifetime = 1.0
    redis_server = RedisServer()
    killed = threading.Event()

    def kill_after_a_shared_renewal(workers: list[subprocess.Popen[str]]) -> None:
        while short_lived.token_requests < 2 and any(w.poll() is None for w in workers):
            time.sleep(0.01)
        redis_server.kill()
        killed.set()

    try:
        reports = run_workers(
            short_lived,
            4,
            3.0,
            cache="redis",
            redis_url=redis_server.url,
            during=kill_after_a_shared_renewal,
        )
    finally:
        redis_server.stop()
    assert killed.is_set()
    assert [r["failed"] for r in reports] == [0] * 4
    warned = [len([m for m in r["warnings"] if "at Redis" in m]) for r in reports]
    assert max(warned) <= 1
    assert sum(warned) >= 1


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_auth_made_before_fork_works_in_children(
    server: FakeTokenServer, make_auth, tmp_path: Path, redis_url: str
):
    """Auth objects and caches made before fork() serve every child; locks held then don't leak."""
    caches = {"file": FileCache(tmp_path), "redis": RedisCache(redis_url)}
    auths = [make_auth(cache=cache) for cache in caches.values()]
    for auth in auths:  # tokens cached, connections pooled, lock files open: all before fork
        assert requests.get(server.api_url(), auth=auth).ok
    key = auths[0]._manager.identity.key
    server.revoke_all()  # every child must renew, under each cache's lock
    server.reset_counters()
    holding, release = threading.Event(), threading.Event()

    def hold_both_locks_across_fork() -> None:
        with caches["file"].lock(key, 5) as in_file, caches["redis"].lock(key, 5) as in_redis:
            assert in_file
            assert in_redis
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_both_locks_across_fork)
    holder.start()
    assert holding.wait(10)
    read_end, write_end = os.pipe()
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # the child: report the status of one request per auth object
            code = 1
            try:
                statuses = [
                    requests.get(server.api_url(), auth=a, timeout=10).status_code for a in auths
                ]
                os.write(write_end, (json.dumps(statuses) + "\n").encode())
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_end)
    release.set()
    holder.join()
    for _ in range(20):  # the parent's own pooled connection still works alongside
        assert caches["redis"].get(key) is not None
    exits = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    with os.fdopen(read_end) as reports:
        statuses = [json.loads(line) for line in reports]
    assert exits == [0, 0, 0]
    assert statuses == [[200, 200]] * 3
    assert server.token_requests == 2  # one renewal per cache, shared by the three children
