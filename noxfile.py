"""Sessions that need a virtualenv of their own.

    nox -s niquests          # niquests' Session and AsyncSession with the same auth object
    nox -s aiohttp-lowest    # the aiohttp middleware with the lowest aiohttp allowed (3.12.0)

niquests installs urllib3-future, which replaces urllib3: it never goes into the
main .venv. Virtualenvs are made by uv when it is installed, else by virtualenv.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["niquests", "aiohttp-lowest"]


@nox.session(python="3.11")
def niquests(session: nox.Session) -> None:
    """tests/niquests: the sync Session works as requests does; the AsyncSession is refused."""
    session.install("-e", ".", "pytest>=8", "pytest-timeout>=2.3", "niquests")
    session.run("python", "-m", "pytest", "tests/niquests", *session.posargs)


@nox.session(name="aiohttp-lowest", python="3.11")
def aiohttp_lowest(session: nox.Session) -> None:
    """The aiohttp tests with aiohttp 3.12.0, the lower bound of the aiohttp extra."""
    session.install("-e", ".[test]", "aiohttp==3.12.0")
    session.run(
        "python", "-m", "pytest", "tests/test_aiohttp.py", "tests/providers", *session.posargs
    )
