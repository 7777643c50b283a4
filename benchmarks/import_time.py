"""What importing chaveiro costs next to ``import requests, httpx``, and why.

Each command runs in a fresh interpreter of this environment (the one that has
trio and redis installed too), the commands interleaved round by round so that a
busy machine slows them alike; the median of each is compared. ``import chaveiro``
alone loads nothing until a name is used, so the figure that counts is
``from chaveiro import ClientCredentialsAuth``, which loads the whole public API:
the goal is a ratio of at most 1.3. Bytecode is compiled first, as pip does when
it installs a wheel.

Then, from ``python -X importtime``, the modules beyond requests and httpx that
``import chaveiro`` loads, heaviest first.

    python benchmarks/import_time.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import chaveiro

BASELINE = "import requests, httpx"
API = "from chaveiro import ClientCredentialsAuth"
BASELINE2 = "import requests, httpx2"
"""The other baseline, where httpx2 is installed: the libraries its users have."""
COMMANDS = {
    "python (startup only)": "pass",
    BASELINE: BASELINE,
    "import chaveiro": "import chaveiro",
    API: API,
}
if importlib.util.find_spec("httpx2") is not None:
    COMMANDS[BASELINE2] = BASELINE2
GOAL = 1.3


def _run(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - start


def _costs(env: dict[str, str], added: set[str]) -> list[tuple[int, str]]:
    """(µs, name): -X importtime's cumulative figure of each added package and chaveiro module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{BASELINE}; {API}"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    costs: dict[str, int] = {}
    for line in result.stderr.splitlines():
        parts = line.split("|")
        name = parts[-1].strip()
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        if name in added or (name.startswith("chaveiro.") and name.count(".") == 1):
            costs[name] = max(costs.get(name, 0), int(parts[1]))
    return sorted(((us, name) for name, us in costs.items()), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    compileall.compile_dir(Path(chaveiro.__file__).parent, quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for code in COMMANDS.values():  # warm the file cache
        _run(code, env)
    for _ in range(args.rounds):
        for name, code in COMMANDS.items():
            times[name].append(_run(code, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{sys.version.split()[0]}, {args.rounds} rounds, median wall time per command:")
    for name, value in medians.items():
        print(f"  {name:<44}{value * 1000:7.1f} ms")
    for baseline in (BASELINE, BASELINE2):
        if baseline in medians:
            ratio = medians[API] / medians[baseline]
            verdict = "ok" if ratio <= GOAL else "OVER the goal"
            print(f"ratio {API} / {baseline}: {ratio:.2f} (goal <= {GOAL}: {verdict})")
    bare = medians["import chaveiro"] / medians[BASELINE]
    print(f"ratio import chaveiro / {BASELINE}: {bare:.2f}")
    loaded = {m.split(".")[0] for m in _modules(env, API)} - {
        m.split(".")[0] for m in _modules(env, BASELINE)
    }
    print(f"top-level modules that {API} adds:", ", ".join(sorted(loaded)))
    print("their cost, and chaveiro's modules' (-X importtime, cumulative, >= 0.3 ms):")
    for micros, name in _costs(env, loaded):
        if micros >= 300:
            print(f"  {micros / 1000:6.1f} ms  {name}")


def _modules(env: dict[str, str], code: str) -> list[str]:
    probe = f"import sys; {code}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], check=True, env=env, capture_output=True, text=True
    )
    return result.stdout.split()


if __name__ == "__main__":
    main()
