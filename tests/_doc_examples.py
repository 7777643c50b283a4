"""Every Python example of README.md and docs/ runs as if pasted alone into a file.

The root ``conftest.py`` hands Sybil the evaluator below. Each example runs in a
namespace of its own (its imports and names must be in it), against a local
:class:`~chaveiro.testing.FakeTokenServer` standing in for the hosts the examples name:

- ``https://idp.example.com/oauth/token`` is the fake server's generic token endpoint,
  ``https://idp.example.com`` its OpenID Connect issuer, and
  ``https://api.example.com/<path>`` its protected API (``/api/<path>``): the harness
  rewrites these URLs in the source before running it;
- the provider adapters' default token URLs (StackSpot, Acesso Cidadão, Bitize, Score
  Positivo) point at the fake server's endpoints of the same dialect;
- the variables ``from_env()`` reads (``OAUTH_*``, ``STACKSPOT_*``, ``CIDADAO_*``,
  ``BITIZE_*``, ``SCOREPOSITIVO_*``) are set to reach it;
- the clients ``my-client`` and ``...`` (both with the secret ``...``) are registered.

How an example runs depends on what it is:

- an example that defines ``test_...`` functions is a test file: pytest runs it in a
  subprocess, with the ``fake_token_server`` fixtures of chaveiro's plugin;
- an example with ``if __name__ == "__main__":``, or after ``<!-- script: reason -->``
  (it sets process-wide state, say), is a script: ``python example.py`` in a subprocess;
- any other runs in this process, in a fresh namespace;
- an example after ``<!-- not-run: reason -->`` (a real bank's certificate, say) is
  compiled, not run; one after ``<!-- requires: module -->`` runs where that optional
  module is installed (httpx2 needs Python 3.11).
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import chaveiro
from chaveiro.providers import bitize, cidadao, scorepositivo, stackspot
from chaveiro.testing import FakeTokenServer, reset
from chaveiro.testing.pytest_plugin import TEST_CLIENT_ID, TEST_CLIENT_SECRET

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(
    r"<!--\s*(?P<kind>not-run|script|requires):\s*(?P<reason>.+?)\s*-->\s*\Z", re.DOTALL
)
CLIENTS = (("my-client", "..."), ("...", "..."), (TEST_CLIENT_ID, TEST_CLIENT_SECRET))
"""The credentials examples use, registered with the fake server."""

_TOKEN_URL = "https://idp.example.com/oauth/token"
_ISSUER = re.compile(r"https://idp\.example\.com(?![\w./-])")
_API = re.compile(r"https://api\.example\.com(?P<path>/[^\"'\s)]*)?")
_SUBPROCESS_TIMEOUT = 120


class World:
    """The fake server behind the examples' hosts, and what points at it."""

    def __init__(self, server: FakeTokenServer) -> None:
        self.server = server

    def rewrite(self, source: str) -> str:
        """The example with its example hosts replaced by the fake server's addresses."""
        url = self.server.url
        source = source.replace(_TOKEN_URL, self.server.oauth_token_url)
        source = _ISSUER.sub(self.server.issuer, source)
        return _API.sub(lambda m: f"{url}/api{m.group('path') or ''}", source)

    def environment(self) -> dict[str, str]:
        """The variables of every provider's ``from_env()``, reaching the fake server."""
        server = self.server
        client = {"CLIENT_ID": TEST_CLIENT_ID, "CLIENT_SECRET": TEST_CLIENT_SECRET}
        variables = {
            "STACKSPOT_CLIENT_ID": TEST_CLIENT_ID,
            "STACKSPOT_CLIENT_KEY": TEST_CLIENT_SECRET,
            "STACKSPOT_REALM": "my-realm",
            "STACKSPOT_TOKEN_URL": server.stackspot_token_url("my-realm"),
            "CIDADAO_SCOPE": "api-a api-b",
            "CIDADAO_TOKEN_URL": server.cidadao_token_url,
            "BITIZE_CONSUMER_KEY": TEST_CLIENT_ID,
            "BITIZE_SECRET_KEY": TEST_CLIENT_SECRET,
            "BITIZE_TOKEN_URL": server.bitize_token_url,
            "SCOREPOSITIVO_TOKEN_URL": server.scorepositivo_token_url,
            "OAUTH_TOKEN_URL": server.oauth_token_url,
            "OAUTH_SCOPE": "api.read",
        }
        for prefix in ("CIDADAO", "SCOREPOSITIVO", "OAUTH"):
            variables.update({f"{prefix}_{name}": value for name, value in client.items()})
        return variables

    def patch_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the adapters' default token URLs at the fake server (this process only)."""
        server = self.server
        monkeypatch.setattr(stackspot, "TOKEN_URL", server.url + "/{realm}/oidc/oauth/token")
        for adapter, url in (
            (cidadao.CidadaoAuth, server.cidadao_token_url),
            (bitize.BitizeAuth, server.bitize_token_url),
            (scorepositivo.ScorePositivoAuth, server.scorepositivo_token_url),
        ):
            defaults = dict(adapter.__init__.__kwdefaults__ or {})
            defaults["token_url"] = url
            monkeypatch.setattr(adapter.__init__, "__kwdefaults__", defaults)


@pytest.fixture(scope="session")
def doc_examples_world() -> Iterator[World]:
    """One fake server for every example of the run (DPoP supported, as Keycloak does)."""
    with FakeTokenServer(dpop=True) as server:
        for client_id, secret in CLIENTS:
            server.add_client(client_id, secret)
        yield World(server)


def kind(example: Any) -> str:
    """``not-run``, ``test``, ``script`` or ``inline``: how the example runs."""
    before = example.document.text[: example.start].rstrip()
    marker = MARKER.search(before[before.rfind("<!--") :]) if "<!--" in before else None
    if marker is not None:
        if marker.group("kind") == "requires":
            pytest.importorskip(marker.group("reason"))
            return "inline"
        return marker.group("kind")
    source = str(example.parsed)
    if re.search(r"^def test_", source, re.MULTILINE):
        return "test"
    if '__name__ == "__main__"' in source:
        return "script"
    return "inline"


def evaluate(example: Any) -> None:
    """Sybil's evaluator: compile the example, then run it as :func:`kind` says."""
    __tracebackhide__ = True
    source = str(example.parsed)
    padding = "\n" * (example.line + example.parsed.line_offset)
    compile(padding + source, example.path, "exec", dont_inherit=True)
    how = kind(example)
    if how == "not-run":
        return
    world: World = example.namespace["doc_examples_world"]
    if how == "test":
        _run_subprocess(
            ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"],
            source,
            "test_example.py",
        )
        return
    if how == "script":
        _run_subprocess([], world.rewrite(source), "example.py", world.environment())
        return
    code = compile(padding + world.rewrite(source), example.path, "exec", dont_inherit=True)
    reset()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in world.environment().items():
            monkeypatch.setenv(name, value)
        world.patch_defaults(monkeypatch)
        namespace: dict[str, Any] = {"__name__": "__doc_example__"}
        try:
            exec(code, namespace)
        finally:
            _close_leftovers(namespace)
    reset()


def _close_leftovers(namespace: dict[str, Any]) -> None:
    """Close what a pasted example leaves open, as the end of its script would."""
    for value in namespace.values():
        closes = isinstance(value, requests.Session | chaveiro.ClientCredentialsAuth)
        if closes or (type(value).__module__.startswith("httpx") and hasattr(value, "close")):
            value.close()
    namespace.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _run_subprocess(
    args: list[str], source: str, name: str, extra_env: dict[str, str] | None = None
) -> None:
    __tracebackhide__ = True
    with tempfile.TemporaryDirectory(prefix="chaveiro-doc-example-") as tmp:
        Path(tmp, name).write_text(source, encoding="utf-8")
        env = {**os.environ, **(extra_env or {})}
        env.pop("PYTEST_ADDOPTS", None)
        result = subprocess.run(
            [sys.executable, *args, name],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        pytest.fail(f"the example failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
