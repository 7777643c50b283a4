"""The suite's own configuration turns a leaked resource into a failure.

A ResourceWarning is raised in ``__del__``, where Python only reports it to
``sys.unraisablehook``; pytest turns that report into a warning, and the
``filterwarnings = ["error"]`` of pyproject.toml into a failure. An object that
only the garbage collector frees is reported at the end of the session (pytest
8.4 and later, hence the lower bound in setup.cfg).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_leak.py").write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "test_leak.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            """
            import socket

            def test_leaks_a_socket():
                sock = socket.socket()
                del sock
            """,
            id="freed at once",
        ),
        pytest.param(
            """
            import socket

            class Holder:
                pass

            def test_leaks_a_socket_in_a_cycle():
                holder = Holder()
                holder.itself, holder.sock = holder, socket.socket()
            """,
            id="freed by the garbage collector",
        ),
    ],
)
def test_a_leaked_socket_fails_the_run(tmp_path: Path, body: str):
    result = run_pytest(tmp_path, body)
    assert result.returncode != 0, result.stdout
    assert "ResourceWarning" in result.stdout + result.stderr


def test_a_closed_socket_passes(tmp_path: Path):
    result = run_pytest(
        tmp_path,
        """
        import socket

        def test_closes_its_socket():
            with socket.socket():
                pass
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
