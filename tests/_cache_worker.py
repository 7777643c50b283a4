"""A worker process for the shared-cache tests: API requests until a given time.

Run as ``python -m tests._cache_worker '<json settings>'`` from the repository
root. It prints ``ready`` once imported, reads the wall-clock end time from
stdin, makes requests until then, and prints one JSON line:
``{"ok": n, "failed": n, "warnings": [...]}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import redis
import requests

from chaveiro import ClientCredentialsAuth, FileCache, RedisCache, TokenCache


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    settings = json.loads(sys.argv[1])
    warnings = Collect()
    logging.getLogger("chaveiro").addHandler(warnings)
    kind, per_request = settings["cache"], settings["per_request"]
    shared = kind == "redis" and per_request
    shared_client = redis.Redis.from_url(settings["redis_url"]) if shared else None

    def make_cache() -> TokenCache:
        if kind == "file":
            return FileCache(settings["path"])
        if per_request:  # a cache object per request, over the process's one client
            return RedisCache(client=shared_client)
        return RedisCache(settings["redis_url"])

    def make_auth(cache: TokenCache) -> ClientCredentialsAuth:
        return ClientCredentialsAuth(
            settings["token_url"], settings["client_id"], settings["client_secret"], cache=cache
        )

    auth = make_auth(make_cache())
    session = requests.Session()
    print("ready", flush=True)
    end = float(sys.stdin.readline())
    ok = failed = 0
    while time.time() < end:
        if per_request:
            auth = make_auth(make_cache())
        try:
            status = session.get(settings["api_url"], auth=auth, timeout=10).status_code
        except Exception as exc:  # counted and reported
            warnings.messages.append(f"request raised {exc!r}")
            status = 0
        ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
        time.sleep(settings["pause"])
    print(json.dumps({"ok": ok, "failed": failed, "warnings": warnings.messages}), flush=True)


if __name__ == "__main__":
    main()
