"""Construction: HTTPS enforcement, missing or bad settings, environment, repr."""

from __future__ import annotations

import pytest

from chaveiro import (
    ChaveiroError,
    ClientCredentialsAuth,
    ConfigurationError,
    InsecureURLError,
    MissingSettingError,
)


@pytest.mark.parametrize(
    "url",
    ["http://idp.example.com/token", "http://10.0.0.5/token", "http://192.168.1.1:8080/t"],
)
def test_plain_http_is_refused_at_construction(url: str):
    """A plain-HTTP token URL on a non-loopback host is refused before any request."""
    with pytest.raises(InsecureURLError, match="allow_insecure_http"):
        ClientCredentialsAuth(url, "id", "secret")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/t", "http://localhost/t", "http://[::1]:9000/t", "http://127.5.6.7/t"],
)
def test_loopback_http_is_allowed(url: str):
    """Loopback hosts may use plain HTTP (tests, local gateways)."""
    assert ClientCredentialsAuth(url, "id", "secret").token_url == url


def test_explicit_opt_in_allows_http():
    """allow_insecure_http=True lets a trusted gateway use plain HTTP."""
    auth = ClientCredentialsAuth(
        "http://gateway.internal/token", "id", "secret", allow_insecure_http=True
    )
    assert auth.token_url.startswith("http://")


@pytest.mark.parametrize("url", ["ftp://idp/token", "idp.example.com/token", "https://", ""])
def test_not_a_url(url: str):
    """Something that is not an http(s) URL is a configuration error."""
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth(url, "id", "secret")


def test_credentials_in_the_url_are_refused():
    """user:password@ in the token URL is refused (it would leak in logs)."""
    with pytest.raises(ConfigurationError, match="credentials"):
        ClientCredentialsAuth("https://u:p@idp.example.com/token", "id", "secret")


@pytest.mark.parametrize(
    ("client_id", "secret"), [("", "s"), ("id", ""), ("id", None), ("  ", "s")]
)
def test_missing_credentials(client_id: str, secret: str | None):
    """An empty client id or secret is a MissingSettingError naming it."""
    with pytest.raises(MissingSettingError) as info:
        ClientCredentialsAuth("https://idp/token", client_id, secret)
    assert info.value.names[0] in str(info.value)


def test_wrong_types():
    """A non-string credential is a clear configuration error."""
    with pytest.raises(ConfigurationError, match="must be a string"):
        ClientCredentialsAuth("https://idp/token", 123, "secret")  # type: ignore[arg-type]


def test_bad_numbers():
    """Negative leeway or zero attempts are refused."""
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("https://idp/token", "id", "s", leeway=-1)
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("https://idp/token", "id", "s", max_attempts=0)


def test_empty_only_hosts():
    """only_hosts=[] would never send the token: refused."""
    with pytest.raises(ConfigurationError, match="only_hosts"):
        ClientCredentialsAuth("https://idp/token", "id", "s", only_hosts=[])


def test_configuration_errors_are_value_errors_and_chaveiro_errors():
    """Configuration errors are both ChaveiroError and ValueError."""
    with pytest.raises(ValueError, match="token_url"):
        ClientCredentialsAuth("", "id", "secret")
    assert issubclass(ConfigurationError, ChaveiroError)


def test_repr_shows_only_url_and_client_id():
    """repr() and str() show the token URL and client id, never the secret."""
    auth = ClientCredentialsAuth("https://idp/token", "my-id", "super-secret-value", scope="x")
    for text in (repr(auth), str(auth)):
        assert "my-id" in text
        assert "https://idp/token" in text
        assert "super-secret-value" not in text


def test_from_env_reads_prefixed_variables():
    """from_env(prefix=...) builds the auth from <PREFIX>_* variables."""
    environ = {
        "MYAPI_TOKEN_URL": "https://idp/token",
        "MYAPI_CLIENT_ID": "env-id",
        "MYAPI_CLIENT_SECRET": "env-secret",
        "MYAPI_SCOPE": "a b",
    }
    auth = ClientCredentialsAuth.from_env(prefix="MYAPI", environ=environ)
    assert (auth.client_id, auth.scope, auth.token_url) == ("env-id", "a b", "https://idp/token")


def test_from_env_names_every_missing_variable():
    """A missing variable is named in the error."""
    with pytest.raises(MissingSettingError) as info:
        ClientCredentialsAuth.from_env(prefix="MYAPI", environ={"MYAPI_CLIENT_ID": "x"})
    assert info.value.names == ("MYAPI_TOKEN_URL", "MYAPI_CLIENT_SECRET")
    assert "MYAPI_TOKEN_URL" in str(info.value)
    assert "MYAPI_CLIENT_SECRET" in str(info.value)


def test_from_env_arguments_win(monkeypatch: pytest.MonkeyPatch):
    """Keyword arguments override the environment; os.environ is the default source."""
    monkeypatch.setenv("OAUTH_TOKEN_URL", "https://idp/token")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "env-id")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "env-secret")
    auth = ClientCredentialsAuth.from_env(client_id="arg-id")
    assert auth.client_id == "arg-id"
