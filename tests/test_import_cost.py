"""What ``import chaveiro`` loads: features load their libraries when used (never timed here).

Each check runs in a fresh interpreter and reads ``sys.modules``; the time it takes is
measured by benchmarks/import_time.py instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

ON_USE = (
    *("authlib", "joserfc", "cryptography", "redis", "trio", "asyncio", "zoneinfo", "httpcore"),
    *("opentelemetry", "trustme", "aiohttp", "niquests"),
    *("httpx", "httpx2", "httpcore2", "httpxyz", "httpcorexyz"),
)
"""Loaded only by the feature that needs them: JWT client authentication (and client
certificates), RedisCache, trio, asyncio, Bitize's time zone, an httpx client's transport
(httpcore imports trio when it is installed), telemetry, the fake provider's mTLS mode, and
the httpx family itself: chaveiro never imports httpx or httpx2, the user's code does."""
HTTP = ("requests", "httpx", "httpcore", "urllib3", "h11")


def loaded_after(code: str) -> set[str]:
    """The top-level modules loaded after running ``code`` in a fresh interpreter.

    The run must print no warning either (authlib 1.7.0 warned as it loaded).
    """
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def test_bare_import_loads_no_dependency():
    """``import chaveiro`` alone loads none of its dependencies (the command line needs that)."""
    loaded = loaded_after("import chaveiro")
    assert loaded.isdisjoint({*ON_USE, *HTTP, "anyio", "sniffio", "filelock", "platformdirs"})


def test_public_api_loads_no_optional_library():
    """The whole public API, and auth objects with secrets and caches, load no optional library."""
    loaded = loaded_after(
        "from chaveiro import *\n"
        "from chaveiro import ClientCredentialsAuth, FileCache, MemoryCache\n"
        "ClientCredentialsAuth('https://idp.example/token', 'id', 'secret', cache=MemoryCache())\n"
        "ClientCredentialsAuth('https://idp.example/token', 'id', 'secret',"
        " auth_method='client_secret_jwt', cache=FileCache('/tmp/chaveiro-import-probe'))\n"
    )
    assert {"chaveiro", "requests"} <= loaded
    added = loaded - loaded_after("import requests")
    assert added.isdisjoint(ON_USE), sorted(added.intersection(ON_USE))


def test_jwt_client_authentication_loads_authlib_when_used(server: FakeTokenServer):
    """Signing a client assertion is what loads authlib and joserfc."""
    loaded = loaded_after(
        "from chaveiro import ClientCredentialsAuth\n"
        f"auth = ClientCredentialsAuth({server.oauth_token_url!r}, {CLIENT_ID!r},"
        f" {CLIENT_SECRET!r}, auth_method='client_secret_jwt')\n"
        "assert auth.get_token().access_token\n"
    )
    assert {"authlib", "joserfc", "cryptography"} <= loaded


def test_redis_loads_with_redis_cache():
    """Making a RedisCache is what loads redis."""
    pytest.importorskip("redis")
    loaded = loaded_after("import chaveiro\nchaveiro.RedisCache('redis://127.0.0.1:1/0')")
    assert "redis" in loaded


def test_every_public_name_is_loaded_on_first_use():
    """Each name in __all__ has a source module, and resolves to an object of ``chaveiro``."""
    code = (
        "import chaveiro\n"
        "names = [n for names in chaveiro._SOURCES.values() for n in names]\n"
        "assert sorted(names) == sorted(chaveiro.__all__), set(names) ^ set(chaveiro.__all__)\n"
        "assert all(getattr(chaveiro, n).__module__ == 'chaveiro' for n in chaveiro.__all__)\n"
        "assert set(chaveiro.__all__) <= set(dir(chaveiro))\n"
    )
    assert "chaveiro" in loaded_after(code)


# ---- the pytest plugin: pytest loads it in every project that has chaveiro installed ------------

_RECORD_MODULES = """
import json, os, sys

def test_record_modules():
    with open(os.environ["CHAVEIRO_MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""


def _modules_at_pytest_start(tmp_path, *options: str) -> set[str]:
    """The modules loaded when a one-test project's only test runs (no fixture of ours used)."""
    project = tmp_path / f"project{len(options)}"
    project.mkdir()
    (project / "test_one.py").write_text(_RECORD_MODULES)
    out = project / "modules.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CHAVEIRO_MODULES_OUT": str(out)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(out.read_text()))


def test_the_pytest_plugin_loads_nothing_heavy_at_pytest_start(tmp_path):
    """Next to ``pytest -p no:chaveiro``, the plugin adds its own three modules and nothing else.

    cryptography and joserfc (the fake server's JWT checks), requests, the fake server and
    chaveiro's state load when a fixture is first used.
    """
    with_plugin = _modules_at_pytest_start(tmp_path)
    without = _modules_at_pytest_start(tmp_path, "-p", "no:chaveiro")
    assert "chaveiro.testing.pytest_plugin" in with_plugin  # the plugin did load
    assert with_plugin - without == {
        "chaveiro",
        "chaveiro.testing",
        "chaveiro.testing.pytest_plugin",
    }
    heavy = {name.split(".")[0] for name in with_plugin} & {*ON_USE, *HTTP}
    assert heavy.isdisjoint({"cryptography", "joserfc", "authlib", "requests", "httpx", "trustme"})


def test_the_pytest_plugin_module_alone():
    """Imported after pytest, the plugin module loads chaveiro's package roots only."""
    code = (
        "import sys, json, pytest\n"
        "before = set(sys.modules)\n"
        "import chaveiro.testing.pytest_plugin\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    added = json.loads(result.stdout)
    assert added == ["chaveiro", "chaveiro.testing", "chaveiro.testing.pytest_plugin"]


def test_the_testing_names_still_load_on_use():
    """``from chaveiro.testing import FakeTokenServer`` (and every other name) still works."""
    code = (
        "import chaveiro.testing as testing\n"
        "for name in testing.__all__:\n"
        "    assert getattr(testing, name) is not None, name\n"
        "assert set(testing.__all__) <= set(dir(testing))\n"
    )
    assert "cryptography" in loaded_after(code)
