"""Run deptry against the dependencies declared in setup.cfg.

deptry reads PEP 621 tables or requirements files, not setup.cfg, so this hands it
two requirements files made from setup.cfg: the runtime dependencies (install_requires
plus every extra that the package itself imports, such as redis and trio) and the
development ones (the extras named in DEV_EXTRAS). deptry's own settings (what to
ignore, and why) are in [tool.deptry] in pyproject.toml.

Usage: python scripts/check_dependencies.py   (exit status: deptry's)
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_EXTRAS = frozenset({"test", "dev", "docs"})
"""Extras for working on chaveiro; the package must never import them."""


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def main() -> int:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    runtime = _lines(config["options"]["install_requires"])
    dev: list[str] = []
    for extra, value in config["options.extras_require"].items():
        (dev if extra in DEV_EXTRAS else runtime).extend(_lines(value))
    with tempfile.TemporaryDirectory() as tmp:
        main_file = Path(tmp, "requirements.txt")
        dev_file = Path(tmp, "requirements-dev.txt")
        main_file.write_text("\n".join(runtime) + "\n", encoding="utf-8")
        dev_file.write_text("\n".join(dev) + "\n", encoding="utf-8")
        command = [
            str(Path(sys.executable).with_name("deptry")),
            "--config",
            str(ROOT / "pyproject.toml"),
            "--requirements-files",
            str(main_file),
            "--requirements-files-dev",
            str(dev_file),
            str(ROOT / "src"),
        ]
        return subprocess.run(command, check=False, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
