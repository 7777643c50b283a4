"""The command line, run as a subprocess like a user would."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaveiro import ClientCredentialsAuth
from chaveiro._cli import ENV_PREFIXES
from chaveiro.providers import PROVIDERS
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.hostile import Answer, RawServer


def chaveiro(*args: str, stdin: str = "", env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "chaveiro", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def issued_token(server: FakeTokenServer) -> str:
    auth = ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, scope="read")
    return auth.get_token().access_token


def test_no_command_prints_help_and_exits_2():
    """Without a command, usage goes to stderr with exit status 2."""
    result = chaveiro()
    assert result.returncode == 2
    assert "usage: chaveiro" in result.stderr


def test_help_has_examples():
    """--help shows examples for every command."""
    for args in (["--help"], ["inspect", "--help"], ["demo", "--help"]):
        result = chaveiro(*args)
        assert result.returncode == 0
        assert "examples:" in result.stdout or "chaveiro demo" in result.stdout


def test_inspect_decodes_and_says_it_did_not_verify(server: FakeTokenServer):
    """inspect shows claims and time left, and says the signature was not checked."""
    result = chaveiro("inspect", issued_token(server))
    assert result.returncode == 0
    assert "NOT verified" in result.stdout
    assert f'"sub": "{CLIENT_ID}"' in result.stdout
    assert "expires in 5" in result.stdout or "expires in 1 h" in result.stdout


def test_inspect_reads_stdin_and_prints_json(server: FakeTokenServer):
    """inspect - reads the token (optionally with 'Bearer ') from stdin; --json is parseable."""
    result = chaveiro("inspect", "-", "--json", stdin="Bearer " + issued_token(server) + "\n")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["verified"] is False
    assert summary["claims"]["sub"] == CLIENT_ID
    assert 3500 < summary["expires_in"] <= 3600


def test_inspect_rejects_non_jwt():
    """A token that is not a JWT is a usage error (exit 2) with a message on stderr."""
    result = chaveiro("inspect", "opaque-token")
    assert result.returncode == 2
    assert "not a JWT" in result.stderr
    assert result.stdout == ""


def test_demo_runs_end_to_end():
    """The demo runs against the built-in provider and shows fetch, reuse, renewal and replay."""
    # Tokens that live long enough for 200 concurrent calls on a busy machine.
    result = chaveiro("demo", "--lifetime", "4")
    assert result.returncode == 0, result.stderr
    for words in ("token fetched", "reused", "renewed", "replayed"):
        assert words in result.stdout
    libraries = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name)]
    assert libraries, "the tests need httpx or httpx2"
    for name in libraries:
        assert f"{name}.AsyncClient, 200 concurrent tasks" in result.stdout
    # the httpx family's async tasks and aiohttp's
    assert result.stdout.count("200 x HTTP 200") == len(libraries) + 1
    assert "HTTP 200, no secret sent" in result.stdout  # mTLS, tls_client_auth
    assert "HTTP 401: bound to its certificate" in result.stdout


def test_pytest_plugin_in_a_throwaway_project(tmp_path: Path):
    """A user's project gets the fake_token_server fixture without any configuration."""
    (tmp_path / "test_user_code.py").write_text(
        textwrap.dedent(
            """
            import requests
            from chaveiro import ClientCredentialsAuth
            from chaveiro.testing.pytest_plugin import TEST_CLIENT_ID, TEST_CLIENT_SECRET

            def test_my_client(fake_token_server):
                auth = ClientCredentialsAuth(
                    fake_token_server.oauth_token_url, TEST_CLIENT_ID, TEST_CLIENT_SECRET
                )
                for _ in range(3):
                    response = requests.get(fake_token_server.api_url(), auth=auth, timeout=5)
                    assert response.status_code == 200
                assert fake_token_server.token_requests == 1

            def test_every_adapter_from_env(fake_provider_env):
                from chaveiro.providers import PROVIDERS
                for adapter in PROVIDERS.values():
                    auth = adapter.from_env()
                    url = fake_provider_env.api_url()
                    assert requests.get(url, auth=auth, timeout=5).status_code == 200
                assert fake_provider_env.token_requests == len(PROVIDERS)

            def test_tokens_do_not_leak_between_tests(fake_token_server):
                auth = ClientCredentialsAuth(
                    fake_token_server.oauth_token_url, TEST_CLIENT_ID, TEST_CLIENT_SECRET
                )
                auth.get_token()
                assert fake_token_server.token_requests == 1
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def token_env(server: FakeTokenServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIDADAO_", "OAUTH_"))}
    env.update(
        CIDADAO_CLIENT_ID=CLIENT_ID,
        CIDADAO_CLIENT_SECRET=CLIENT_SECRET,
        CIDADAO_SCOPE="read",
        CIDADAO_TOKEN_URL=server.cidadao_token_url,
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
    )
    return env


def test_token_prints_the_token_and_reuses_it_across_runs(server: FakeTokenServer, tmp_path: Path):
    """token prints the access token; a second run reads it from the file cache."""
    env = token_env(server, tmp_path)
    first = chaveiro("token", "cidadao", env=env)
    second = chaveiro("token", "cidadao", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() in server.issued_tokens
    assert second.stdout == first.stdout
    assert server.token_requests == 1
    assert CLIENT_SECRET not in first.stdout + first.stderr


def test_token_json_and_header(server: FakeTokenServer, tmp_path: Path):
    """--json prints metadata without the secret; --header prints the Authorization line."""
    env = token_env(server, tmp_path)
    result = chaveiro("token", "cidadao", "--json", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"token_type", "expires_at", "expires_in", "scope"}
    assert summary["token_type"] == "Bearer"
    assert 3500 < summary["expires_in"] <= 3600
    assert summary["scope"] == "read"
    header = chaveiro("token", "cidadao", "--header", env=env)
    assert header.stdout.startswith("Authorization: Bearer ")
    assert CLIENT_SECRET not in result.stdout + header.stdout


def test_token_missing_variable_exits_2(server: FakeTokenServer, tmp_path: Path):
    """A missing variable is named on stderr, with exit status 2."""
    env = token_env(server, tmp_path)
    del env["CIDADAO_CLIENT_SECRET"]
    result = chaveiro("token", "cidadao", env=env)
    assert result.returncode == 2
    assert "CIDADAO_CLIENT_SECRET" in result.stderr
    assert result.stdout == ""


def test_token_rejected_credentials_exit_1(server: FakeTokenServer, tmp_path: Path):
    """Rejected credentials: exit status 1, the provider's error on stderr, no secret shown."""
    env = token_env(server, tmp_path)
    env["CIDADAO_CLIENT_SECRET"] = "wrong-secret-value"
    result = chaveiro("token", "cidadao", "--no-cache", env=env)
    assert result.returncode == 1
    assert "invalid_client" in result.stderr
    assert "wrong-secret-value" not in result.stderr


def test_token_generic_oauth_with_options(server: FakeTokenServer, tmp_path: Path):
    """The oauth provider takes --token-url and --scope on top of OAUTH_* variables."""
    env = token_env(server, tmp_path)
    env.update(OAUTH_CLIENT_ID=CLIENT_ID, OAUTH_CLIENT_SECRET=CLIENT_SECRET)
    result = chaveiro(
        "token",
        "oauth",
        "--token-url",
        server.oauth_token_url,
        "--scope",
        "a b",
        "--cache-dir",
        str(tmp_path / "c"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert server.token_request_log[-1].fields["scope"] == "a b"


@pytest.mark.parametrize("provider", ["bitize", "scorepositivo"])
def test_token_scope_for_a_provider_without_scopes_is_a_usage_error(
    server: FakeTokenServer, tmp_path: Path, provider: str
):
    """--scope for a provider that takes none: exit 2 before any request, saying so."""
    env = token_env(server, tmp_path)
    prefix = provider.upper()
    key, secret = (
        ("CONSUMER_KEY", "SECRET_KEY") if provider == "bitize" else ("CLIENT_ID", "CLIENT_SECRET")
    )
    env.update({f"{prefix}_{key}": CLIENT_ID, f"{prefix}_{secret}": CLIENT_SECRET})
    env[f"{prefix}_TOKEN_URL"] = getattr(server, f"{provider}_token_url")
    result = chaveiro("token", provider, "--scope", "x", "--no-cache", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"chaveiro token: {provider} does not take --scope: its token endpoint takes no scope"
        " (stackspot, cidadao and oauth do).\n"
    )
    assert server.token_requests == 0
    assert chaveiro("token", provider, "--no-cache", env=env).returncode == 0


@pytest.mark.parametrize("failure", ["rejected", "unreachable", "forbidden"])
def test_token_errors_are_printed_once(server: FakeTokenServer, tmp_path: Path, failure: str):
    """A failed command prints one line on stderr: the error, not also a log record of it."""
    env = token_env(server, tmp_path)
    if failure == "rejected":
        env["CIDADAO_CLIENT_SECRET"] = "wrong-secret-value"
    elif failure == "unreachable":
        env["CIDADAO_TOKEN_URL"] = "http://127.0.0.1:9/is/connect/token"
    else:
        server.fail(Failure.empty(403))
    result = chaveiro("token", "cidadao", "--no-cache", env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("chaveiro token: ")
    assert "not asking again" not in line


def test_token_warnings_are_printed_once_as_the_commands_own(
    server: FakeTokenServer, tmp_path: Path
):
    """A warning on the way (here: no expiry in the answer) is one line, and the token prints."""
    with RawServer() as raw:
        raw.answer = Answer(body=b'{"access_token": "tok-1", "token_type": "Bearer"}')
        env = token_env(server, tmp_path)
        env.update(OAUTH_TOKEN_URL=raw.url, OAUTH_CLIENT_ID=CLIENT_ID, OAUTH_CLIENT_SECRET="s")
        result = chaveiro("token", "oauth", "--no-cache", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tok-1\n"
    [line] = result.stderr.splitlines()
    assert line.startswith("chaveiro token: warning: the token response does not say when")


def test_token_unknown_provider_is_a_usage_error():
    """An unknown provider name is a usage error (exit 2)."""
    assert chaveiro("token", "nope").returncode == 2


# ---- the cached answer of chaveiro token: no authlib, no HTTP library ------------------------

HEAVY = ("requests", "httpx", "httpcore", "urllib3", "h11", "authlib", "joserfc", "cryptography")
_PROBE = """
import json, sys
from chaveiro._cli import main
status = main(sys.argv[1:])
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps(heavy), file=sys.stderr)
sys.exit(status)
"""


def probe_token(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list]:
    """Run ``chaveiro token ...`` in a fresh interpreter; also say which heavy modules it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "token", *args],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return result, json.loads(result.stderr.strip().splitlines()[-1])


def test_cached_token_is_answered_without_http_libraries(server: FakeTokenServer, tmp_path: Path):
    """A fresh token in the file cache is printed without loading authlib or HTTP libraries."""
    env = token_env(server, tmp_path)
    first, loaded_first = probe_token("cidadao", env=env)
    assert first.returncode == 0, first.stderr
    assert "requests" in loaded_first  # the first run asks the provider
    for args in ((), ("--header",), ("--json",)):
        again, loaded = probe_token("cidadao", *args, env=env)
        assert again.returncode == 0, again.stderr
        assert loaded == []
    plain, _ = probe_token("cidadao", env=env)
    assert plain.stdout == first.stdout
    assert server.token_requests == 1


def test_cached_answer_needs_the_same_inputs(server: FakeTokenServer, tmp_path: Path):
    """Another scope, secret or option is another question: the provider is asked again."""
    env = token_env(server, tmp_path)
    first = chaveiro("token", "cidadao", env=env)
    assert first.returncode == 0
    other_scope = {**env, "CIDADAO_SCOPE": "write"}
    result, loaded = probe_token("cidadao", env=other_scope)
    assert result.returncode == 0, result.stderr
    assert "requests" in loaded
    assert server.token_requests == 2
    assert server.token_request_log[-1].fields["scope"] == "write"
    wrong_secret = {**env, "CIDADAO_CLIENT_SECRET": "not-the-secret-0123"}
    refused = chaveiro("token", "cidadao", env=wrong_secret)
    assert refused.returncode == 1  # never the token cached for the right secret
    assert refused.stdout == ""
    # Another option: the full path runs, and finds the token in the file cache itself.
    with_option, loaded = probe_token("cidadao", "--allow-insecure-http", env=env)
    assert "requests" in loaded
    assert with_option.stdout == first.stdout
    assert server.token_requests == 3


def test_cached_answer_is_not_given_once_the_token_is_due(tmp_path: Path):
    """A token due for renewal (the manager's own rule) is renewed, not printed from cache."""
    with FakeTokenServer(lifetime=1.0) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        env = token_env(server, tmp_path)
        first = chaveiro("token", "cidadao", env=env)
        assert first.returncode == 0, first.stderr
        time.sleep(0.6)  # past half the lifetime: due for renewal
        second, loaded = probe_token("cidadao", env=env)
        assert second.returncode == 0, second.stderr
        assert "requests" in loaded
        assert second.stdout != first.stdout
        assert server.token_requests == 2


def test_shortcut_files_hold_no_secret(server: FakeTokenServer, tmp_path: Path):
    """The shortcut beside the tokens names no secret and is private to the user."""
    env = token_env(server, tmp_path)
    token = chaveiro("token", "cidadao", env=env).stdout.strip()
    notes = list((tmp_path / "xdg").rglob("*.note"))
    assert len(notes) == 1
    for note in notes:
        text = note.read_text()
        assert CLIENT_SECRET not in text + note.name
        assert token not in text
        assert note.stat().st_mode & 0o077 == 0
    assert set(json.loads(notes[0].read_text())) == {"key", "leeway"}


def test_env_prefixes_match_the_provider_classes():
    """The fast path hashes the same variables that from_env() reads."""
    classes = {**PROVIDERS, "oauth": ClientCredentialsAuth}
    assert {name: cls.env_prefix for name, cls in classes.items()} == ENV_PREFIXES


def test_a_replaced_certificate_file_is_another_shortcut(tmp_path: Path, monkeypatch):
    """<PREFIX>_CLIENT_CERT names a file: a new certificate under the same name is new input."""
    from chaveiro._cli import _shortcut_name, build_parser  # noqa: PLC0415

    cert = tmp_path / "client.p12"
    cert.write_bytes(b"first certificate")
    monkeypatch.setenv("OAUTH_CLIENT_CERT", str(cert))
    args = build_parser().parse_args(["token", "oauth"])
    first = _shortcut_name(args)
    assert _shortcut_name(args) == first
    cert.write_bytes(b"the renewed certificate")
    assert _shortcut_name(args) != first
