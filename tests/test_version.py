"""One version, read from ``chaveiro/_version.py`` by everything that shows one."""

from __future__ import annotations

import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import chaveiro
from chaveiro._telemetry import _version as telemetry_version
from chaveiro._version import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_a_release_or_a_development_version():
    """PEP 440, in the two shapes this project uses: 0.2.0 and 0.3.0.dev0."""
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(\.dev[0-9]+)?", __version__)


def test_setup_cfg_reads_the_version_from_the_package():
    """The metadata is not a second copy: setup.cfg points at chaveiro._version."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    assert config["metadata"]["version"] == "attr: chaveiro._version.__version__"


def test_the_package_and_its_metadata_agree():
    """chaveiro.__version__ is the installed distribution's version."""
    assert chaveiro.__version__ == __version__
    assert importlib.metadata.version("chaveiro") == __version__


def test_the_command_line_shows_the_version():
    """chaveiro --version prints the same version and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "chaveiro", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"chaveiro {__version__}"


def test_telemetry_names_the_same_version():
    """The meter and tracer named chaveiro carry the package's version."""
    assert telemetry_version() == __version__


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.partition(".dev")[0].split("."))


def test_the_changelog_has_the_releases_up_to_this_version():
    """Each release has a dated section, newest first, under [Unreleased]; a release
    version is the newest section, a development version comes after it."""
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[([0-9.]+)\] - [0-9]{4}-[0-9]{2}-[0-9]{2}$", changelog, re.M)
    assert released, "CHANGELOG.md has no dated release section"
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{released[0]}]")
    assert [_numbers(v) for v in released] == sorted(map(_numbers, released), reverse=True)
    if ".dev" in __version__:
        assert _numbers(__version__) > _numbers(released[0])
    else:
        assert __version__ == released[0]
