"""The version matrix: the test suite on every supported Python, newest and lowest dependencies.

    .venv/bin/nox -l                  # list the sessions
    .venv/bin/nox -s tests-3.12       # one Python, newest dependencies
    .venv/bin/nox -s lowest-3.10      # Python 3.10, lowest version of each direct dependency
    .venv/bin/nox -s tests-3.13 -- -k redis -x   # arguments after -- go to pytest
    .venv/bin/nox -s niquests         # niquests' Session and AsyncSession with the same auth object
    .venv/bin/nox -s aiohttp-lowest   # the aiohttp middleware with aiohttp 3.12.0
    .venv/bin/nox -s httpx2-3.13      # the whole suite on httpx2 alone (httpx uninstalled)
    .venv/bin/nox -s httpx2-lowest    # the httpx tests on httpx2 2.0.0, the extra's lower bound
    .venv/bin/nox -s httpxyz          # the httpx family's tests with the httpxyz fork too
    .venv/bin/nox -s sdks-lowest      # the mcp and openai recipes on the test extra's lower bounds

niquests installs urllib3-future, which replaces urllib3: it never goes into the
main .venv, nor into the other sessions.

Virtual environments are made by uv (in .nox/). Interpreters come from PATH, and from
pyenv's versions directory when pyenv is installed; uv never downloads one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
HTTPX2_PYTHONS = ["3.11", "3.12", "3.13"]  # httpx2 needs Python 3.11 or newer
EXTRAS = ".[redis,trio,test]"

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    *(f"tests-{version}" for version in PYTHONS),
    "lowest-3.10",
    "niquests",
    "aiohttp-lowest",
    *(f"httpx2-{version}" for version in HTTPX2_PYTHONS),
    "httpx2-lowest",
    "sdks-lowest",
]
os.environ["UV_PYTHON_DOWNLOADS"] = "never"


def _pyenv_pythons() -> list[str]:
    """The bin directories of pyenv's Pythons (its shims only run the selected version)."""
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    found = sorted(Path(root, "versions").glob("3.*/bin"), reverse=True)
    return [str(path) for path in found if path.name == "bin"]


os.environ["PATH"] = os.pathsep.join([*_pyenv_pythons(), os.environ.get("PATH", "")])


_SHOW_VERSIONS = """
import importlib.metadata as m, re
found = set()
for requirement in m.requires("chaveiro") or []:
    name = re.split("[^A-Za-z0-9_.-]", requirement)[0]
    try:
        found.add(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass  # an extra that this session does not install
print("direct dependencies:", ", ".join(sorted(found)))
"""


def _pytest(session: nox.Session) -> None:
    session.run("python", "-c", _SHOW_VERSIONS, silent=False)
    session.run("python", "-m", "pytest", "-n", "auto", *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite with the newest release of every dependency."""
    session.install("--upgrade", "-e", EXTRAS)
    _pytest(session)


@nox.session(name="lowest-3.10", python="3.10")
def lowest(session: nox.Session) -> None:
    """The test suite with the lowest version setup.cfg allows of every direct dependency."""
    session.install("--resolution", "lowest-direct", "-e", EXTRAS)
    _pytest(session)


@nox.session(python="3.11")
def niquests(session: nox.Session) -> None:
    """tests/niquests: the sync Session works as requests does; the AsyncSession is refused."""
    session.install("-e", ".[testing]", "pytest>=8.4", "pytest-timeout>=2.3", "niquests")
    session.run("python", "-m", "pytest", "tests/niquests", *session.posargs)


@nox.session(name="aiohttp-lowest", python="3.11")
def aiohttp_lowest(session: nox.Session) -> None:
    """The aiohttp tests with aiohttp 3.12.0, the lower bound of the aiohttp extra."""
    session.install("-e", EXTRAS, "aiohttp==3.12.0")
    session.run(
        "python", "-m", "pytest", "tests/test_aiohttp.py", "tests/providers", *session.posargs
    )


def _httpx2_only(session: nox.Session, *pins: str) -> None:
    """Install the test suite's dependencies with httpx2 in place of httpx, and alias it.

    With ``CHAVEIRO_TEST_HTTPX=httpx2``, tests/conftest.py calls ``httpx2.alias_httpx()``
    before anything imports httpx: every ``import httpx`` in the tests is httpx2.
    """
    session.install("-e", EXTRAS)
    if pins:  # the SDKs built on httpx2 want a newer one than its lowest: not in this session
        session.run("uv", "pip", "uninstall", *HTTPX2_SDKS, external=True, silent=True)
        session.install(*pins)
    session.run("uv", "pip", "uninstall", "httpx", "httpcore", external=True, silent=True)
    session.env["CHAVEIRO_TEST_HTTPX"] = "httpx2"


@nox.session(name="httpx2", python=HTTPX2_PYTHONS)
def httpx2_session(session: nox.Session) -> None:
    """The whole test suite with httpx2 alone: every httpx test runs on httpx2."""
    _httpx2_only(session)
    _pytest(session)


@nox.session(name="httpx2-lowest", python="3.11")
def httpx2_lowest(session: nox.Session) -> None:
    """The httpx tests on httpx2 and httpcore2 2.0.0, the lower bound of the httpx2 extra."""
    _httpx2_only(session, "httpx2==2.0.0", "httpcore2==2.0.0")
    session.run("python", "-m", "pytest", "-n", "auto", *HTTPX_TESTS, *session.posargs)


@nox.session(name="sdks-lowest", python="3.11")
def sdks_lowest(session: nox.Session) -> None:
    """The mcp and openai recipes (docs/mcp.md) on the lower bounds of the test extra."""
    session.install("-e", EXTRAS, "mcp==2.0.0", "openai==3.0.0", "uvicorn==0.31.1")
    session.run("python", "-m", "pytest", *SDK_TESTS, *session.posargs)


HTTPX2_SDKS = ("mcp", "openai")
"""Test dependencies built on httpx2, each needing a newer httpx2 than 2.0.0."""
SDK_TESTS = ("tests/test_mcp.py", "tests/test_openai.py")
HTTPX_TESTS = (
    "tests/test_httpx_auth.py",
    "tests/test_httpx2.py",
    "tests/test_proxies.py",
    "tests/test_redirects.py",
    "tests/test_tls.py",
    "tests/test_mtls.py",
)


@nox.session(python="3.11")
def httpxyz(session: nox.Session) -> None:
    """The httpx family's tests (each client library as a parameter) with the httpxyz fork too."""
    session.install("-e", EXTRAS, "httpxyz")
    session.run(
        "python", "-m", "pytest", "-n", "auto", "-k", "httpxyz", *HTTPX_TESTS, *session.posargs
    )
