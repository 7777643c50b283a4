"""Type-check every Python example of README.md and docs/ with mypy.

The examples also run as tests (tests/_doc_examples.py); this catches what a run
cannot: a wrong argument in an example that is only compiled (a bank's recipe), a
misspelt keyword in a branch that never runs. Each example is written to
build/doc-examples/ as a module of its own, as if pasted alone into a file.

Usage: python scripts/check_examples.py   (exit status: mypy's)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "doc-examples"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    documents = [ROOT / "README.md", *sorted(ROOT.joinpath("docs").rglob("*.md"))]
    count = 0
    for document in documents:
        text = document.read_text(encoding="utf-8")
        name = document.relative_to(ROOT).with_suffix("").as_posix().replace("/", "_")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            module = OUT / f"{re.sub(r'[^A-Za-z0-9_]', '_', name)}_line{line}.py"
            module.write_text(match.group(1), encoding="utf-8")
            count += 1
    print(f"check_examples: {count} examples from {len(documents)} documents")
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--python-version",
        "3.10",
        "--allow-untyped-defs",
        "--allow-incomplete-defs",
        "--allow-untyped-calls",
        "--check-untyped-defs",
        "--disable-error-code=import-not-found",  # httpx2, and the guide's made-up provider
        "--follow-imports=silent",  # report the examples, not the modules they import
        "--no-error-summary",
        str(OUT),
    ]
    return subprocess.run(command, check=False, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
