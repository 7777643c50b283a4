"""``chaveiro token PROVIDER`` answered from its file cache, next to ``import requests, httpx``.

A local fake provider issues one token; the first ``chaveiro token cidadao`` fetches it
and stores it in a FileCache in a temporary directory. Then the command (the installed
console script, as a shell would run it) and ``python -c "import requests, httpx"`` run
in turn, round after round, and the medians are compared. The goal is at most 1.5;
the cached answer needs neither authlib nor any HTTP library.

    python benchmarks/cli_time.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaveiro.testing import FakeTokenServer

GOAL = 1.5
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret-0123456789"


def _command() -> list[str]:
    script = shutil.which("chaveiro", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chaveiro"]


def _run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with FakeTokenServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CIDADAO_"))}
        env.update(
            CIDADAO_CLIENT_ID=CLIENT_ID,
            CIDADAO_CLIENT_SECRET=CLIENT_SECRET,
            CIDADAO_SCOPE="read",
            CIDADAO_TOKEN_URL=server.cidadao_token_url,
            XDG_CACHE_HOME=tmp,
        )
        token_command = [*_command(), "token", "cidadao"]
        baseline = [sys.executable, "-c", "import requests, httpx"]
        _, first = _run(token_command, env)  # fetches, stores, and leaves the shortcut
        _run(baseline, env)
        times: dict[str, list[float]] = {"token": [], "baseline": []}
        for _ in range(args.rounds):
            elapsed, printed = _run(token_command, env)
            assert printed == first, "the cached answer changed"
            times["token"].append(elapsed)
            times["baseline"].append(_run(baseline, env)[0])
        requests_made = server.token_requests
    token = statistics.median(times["token"])
    base = statistics.median(times["baseline"])
    print(f"{sys.version.split()[0]}, {args.rounds} rounds, median wall time:")
    label = "chaveiro token cidadao"
    print(f"  {label:<34}{token * 1000:7.1f} ms  (cached token)")
    label = 'python -c "import requests, httpx"'
    print(f"  {label:<34}{base * 1000:7.1f} ms")
    ratio = token / base
    verdict = "ok" if ratio <= GOAL else "OVER the goal"
    print(f"ratio: {ratio:.2f} (goal <= {GOAL}: {verdict}); token requests: {requests_made}")


if __name__ == "__main__":
    main()
