"""Caches travel: pickle and deepcopy carry their settings, and the copy is the same cache."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaveiro import FileCache, MemoryCache, RedisCache, Token
from chaveiro._caches import default_cache

TOKEN = "access-token-that-must-not-travel-0123456789"


def a_token() -> Token:
    now = time.time()
    return Token(access_token=TOKEN, expires_at=now + 3600, issued_at=now)


def in_another_process(code: str, *pickles: bytes) -> str:
    """Run ``code`` in a fresh interpreter with ``objects``, the unpickled ``pickles``."""
    program = (
        "import pickle, sys\n"
        "data = sys.stdin.buffer.read()\n"
        "objects = [pickle.loads(bytes.fromhex(h)) for h in data.decode().split()]\n" + code
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=" ".join(p.hex() for p in pickles).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def caches(tmp_path: Path) -> dict[str, object]:
    return {
        "private memory": MemoryCache(),
        "default memory": default_cache(),
        "file": FileCache(tmp_path),
        "redis from a URL": RedisCache("redis://:redis-password@127.0.0.1:1/0", prefix="p:"),
    }


@pytest.mark.parametrize("kind", ["private memory", "default memory", "file", "redis from a URL"])
def test_a_copy_in_the_same_process_is_the_cache_itself(tmp_path: Path, kind: str):
    """deepcopy, copy and a pickle round trip give back the very cache: one shared state."""
    cache = caches(tmp_path)[kind]
    assert copy.deepcopy(cache) is cache
    assert copy.copy(cache) is cache
    assert pickle.loads(pickle.dumps(cache)) is cache
    assert copy.deepcopy({"a": cache, "b": [cache]})["b"][0] is cache


@pytest.mark.parametrize("kind", ["private memory", "default memory", "file"])
def test_the_pickled_form_holds_no_token(tmp_path: Path, kind: str):
    """A cache holding a token pickles without it: settings only."""
    cache = caches(tmp_path)[kind]
    cache.set("some-key", a_token())  # type: ignore[attr-defined]
    data = pickle.dumps(cache)
    assert TOKEN.encode() not in data
    assert len(data) < 300


def test_memory_caches_in_another_process(tmp_path: Path):
    """There, each original is one new empty cache, however many times it arrives."""
    private, other = MemoryCache(), MemoryCache(max_entries=7)
    private.set("k", a_token())
    printed = in_another_process(
        "from chaveiro._caches import default_cache\n"
        "a, a_again, b, default = objects\n"
        "print(a is a_again, a is not b, default is default_cache(), a.get('k'),"
        " a.max_entries, b.max_entries)\n",
        pickle.dumps(private),
        pickle.dumps(private),
        pickle.dumps(other),
        pickle.dumps(default_cache()),
    )
    assert printed == "True True True None 10000 7"


def test_file_cache_in_another_process_reads_the_same_files(tmp_path: Path):
    """A FileCache sent to another process finds the tokens stored here."""
    cache = FileCache(tmp_path / "tokens")
    cache.set("some-key", a_token())
    printed = in_another_process(
        "cache, = objects\nprint(cache.path, cache.get('some-key').access_token)\n",
        pickle.dumps(cache),
    )
    assert printed == f"{tmp_path / 'tokens'} {TOKEN}"


def test_redis_cache_from_a_url_in_another_process(redis_url: str):
    """A RedisCache made from a URL arrives with its settings and reads the same keys."""
    cache = RedisCache(redis_url, prefix="travel:", timeout=2.0)
    cache.set("some-key", a_token())
    data = pickle.dumps(cache)
    assert redis_url.encode() in data  # settings only: the URL (and a password in it) travel
    assert TOKEN.encode() not in data
    printed = in_another_process(
        "cache, = objects\n"
        "print(cache.prefix, cache._timeouts, cache.get('some-key').access_token)\n",
        data,
    )
    assert printed == f"travel: (0.5, 2.0) {TOKEN}"
    cache.close()


@pytest.mark.parametrize("with_async_client", [False, True], ids=["client", "and async_client"])
def test_redis_cache_around_a_client_travels_as_its_url(redis_url: str, with_async_client: bool):
    """A RedisCache made around a client arrives as the client's URL and reads the same keys."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url) if with_async_client else None
    cache = RedisCache(client=client, async_client=async_client, prefix="travel:", lock_lease=2)
    cache.set("some-key", a_token())
    data = pickle.dumps(cache)
    assert redis_url.encode() in data
    assert TOKEN.encode() not in data
    printed = in_another_process(
        "cache, = objects\n"
        "print(cache.prefix, cache.lock_lease, cache.get('some-key').access_token)\n",
        data,
    )
    assert printed == f"travel: 2.0 {TOKEN}"
    assert pickle.loads(data) is cache
    client.close()


def test_redis_cache_around_a_client_no_url_describes_cannot_be_pickled():
    """A client with a credential provider: the TypeError says to build the cache from a URL."""
    redis = pytest.importorskip("redis")
    provider = redis.credentials.UsernamePasswordCredentialProvider("user", "redis-password")
    client = redis.Redis(host="127.0.0.1", port=1, credential_provider=provider)
    cache = RedisCache(client=client)
    with pytest.raises(
        TypeError, match=r"Build the cache from a URL instead, RedisCache\('redis://"
    ):
        pickle.dumps(cache)
    assert copy.deepcopy(cache) is cache
    assert copy.copy(cache) is cache
    client.close()
