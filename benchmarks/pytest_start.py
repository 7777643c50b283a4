"""What chaveiro's pytest plugin adds to every pytest start, in a project that does not use it.

pytest loads the plugin (an entry point) in every project where chaveiro is installed.
A one-test project that never asks for a chaveiro fixture runs ``python -m pytest``
with the plugin and with ``-p no:chaveiro``, in turn, round after round; the medians
are compared (goal: at most 1.05), and the modules the plugin added are counted. The
fake server, cryptography and joserfc load when a fixture is first used.

    python benchmarks/pytest_start.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.05
_TEST = """
import json, os, sys

def test_nothing_of_chaveiro():
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""


def _run(project: Path, options: list[str], out: Path) -> tuple[float, set[str]]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options]
    env = {**os.environ, "MODULES_OUT": str(out)}
    start = time.perf_counter()
    subprocess.run([*command, str(project)], cwd=project, env=env, check=True, capture_output=True)
    return time.perf_counter() - start, set(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    runs = {"with the plugin": [], "-p no:chaveiro": []}
    options = {"with the plugin": [], "-p no:chaveiro": ["-p", "no:chaveiro"]}
    modules: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_one.py").write_text(_TEST)
        for name in runs:  # a first run of each compiles and warms the caches
            _run(project, options[name], project / "modules.json")
        for _ in range(args.rounds):
            for name, times in runs.items():
                elapsed, modules[name] = _run(project, options[name], project / "modules.json")
                times.append(elapsed)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    print(f"{sys.version.split()[0]}, {args.rounds} rounds, median wall time of a one-test run:")
    for name, median in medians.items():
        print(f"  pytest {name:<20}{median * 1000:7.1f} ms  ({len(modules[name])} modules)")
    added = sorted(modules["with the plugin"] - modules["-p no:chaveiro"])
    ratio = medians["with the plugin"] / medians["-p no:chaveiro"]
    verdict = "ok" if ratio <= GOAL else "OVER the goal"
    print(f"ratio: {ratio:.3f} (goal <= {GOAL}: {verdict}); modules added: {', '.join(added)}")


if __name__ == "__main__":
    main()
