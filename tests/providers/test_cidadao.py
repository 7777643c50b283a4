"""CidadaoAuth against the fake IdentityServer endpoint, over real HTTP."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest
import requests

from chaveiro import CidadaoAuth, CredentialsRejectedError, MissingSettingError
from chaveiro.providers.cidadao import TOKEN_URL
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock
from tests.providers.conftest import call

SCOPE = "api-sigefes api-acessocidadao"


def make(server: FakeTokenServer, **options: object) -> CidadaoAuth:
    settings: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": SCOPE,
        "token_url": server.cidadao_token_url,
    }
    settings.update(options)
    return CidadaoAuth(**settings)  # type: ignore[arg-type]


def test_token_request_shape(server: FakeTokenServer, client: str):
    """Basic client authentication (RFC 6749 §2.3.1 encoding) and grant_type + scope in a form."""
    odd_id, odd_secret = "cidadão app:1", "p@ss wörd/+=:%"
    server.add_client(odd_id, odd_secret)
    auth = make(server, client_id=odd_id, client_secret=odd_secret)
    assert call(client, auth, server.api_url()) == [200]
    [sent] = server.token_request_log
    assert sent.path == "/is/connect/token"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["accept"] == "application/json"
    scheme, _, encoded = sent.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(encoded).decode("ascii")
    assert decoded == f"{quote_plus(odd_id)}:{quote_plus(odd_secret)}"
    assert sent.fields == {"grant_type": "client_credentials", "scope": SCOPE}


def test_default_url():
    """The default token URL is Acesso Cidadão's production endpoint."""
    assert TOKEN_URL == "https://acessocidadao.es.gov.br/is/connect/token"
    assert CidadaoAuth("id", "secret", "api").token_url == TOKEN_URL


def test_scope_list_is_sent_space_separated(server: FakeTokenServer):
    """A list of scopes becomes one space-separated field."""
    make(server, scope=["api-sigefes", "api-acessocidadao"]).get_token()
    assert server.token_request_log[0].fields["scope"] == SCOPE


@pytest.mark.parametrize("scope", [None, "", "  ", []])
def test_missing_scope_fails_at_construction(scope: object):
    """No scope is a MissingSettingError before any request: the server would refuse it."""
    with pytest.raises(MissingSettingError, match="scope is required") as caught:
        CidadaoAuth("id", "secret", scope)  # type: ignore[arg-type]
    assert caught.value.names == ("scope",)


def test_many_calls_one_token_request(server: FakeTokenServer, client: str):
    """Fifty API calls share one token: asking too often gets a client blocked."""
    assert call(client, make(server), server.api_url(), times=50) == [200] * 50
    assert server.token_requests == 1


def test_renewal_fetches_a_new_token(server: FakeTokenServer, client: str):
    """Inside the leeway a new token is fetched with the credentials (no refresh token)."""
    clock = FakeClock()
    auth = make(server, clock=clock)
    call(client, auth, server.api_url())
    clock.now += 3600 - 10
    assert call(client, auth, server.api_url()) == [200]
    assert server.grants == ["client_credentials", "client_credentials"]
    assert auth.stats.renewed == 1


def test_401_renews_and_replays(server: FakeTokenServer, client: str):
    """A 401 for the held token renews it and replays the request once."""
    auth = make(server)
    call(client, auth, server.api_url())
    server.revoke_all()
    assert call(client, auth, server.api_url()) == [200]
    assert server.api_unauthorized == 1
    assert server.token_requests == 2


def test_rejected_credentials_raise_a_clear_error(server: FakeTokenServer, client: str):
    """A wrong secret: CredentialsRejectedError with IdentityServer's invalid_client."""
    with pytest.raises(CredentialsRejectedError, match="invalid_client") as caught:
        call(client, make(server, client_secret="wrong"), server.api_url())
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 400
    assert "Acesso Cidadão" in str(caught.value)


def test_scope_not_allowed_is_explained(server: FakeTokenServer):
    """A scope the application may not ask for: invalid_scope, with advice about the scope."""
    server.add_client("limited", CLIENT_SECRET, scopes=["api-a"])
    with pytest.raises(CredentialsRejectedError, match="Check the scope") as caught:
        make(server, client_id="limited", scope="api-b").get_token()
    assert caught.value.error == "invalid_scope"


def test_from_env(server: FakeTokenServer):
    """from_env reads id, secret, scope and the optional token URL."""
    env = {
        "CIDADAO_CLIENT_ID": CLIENT_ID,
        "CIDADAO_CLIENT_SECRET": CLIENT_SECRET,
        "CIDADAO_SCOPE": SCOPE,
    }
    assert CidadaoAuth.from_env(environ=env).token_url == TOKEN_URL
    env["CIDADAO_TOKEN_URL"] = server.cidadao_token_url
    auth = CidadaoAuth.from_env(environ=env)
    assert auth.scope == SCOPE
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200


def test_from_env_names_the_missing_scope():
    """A missing CIDADAO_SCOPE is named like any other variable."""
    env = {"CIDADAO_CLIENT_ID": "id", "CIDADAO_CLIENT_SECRET": "secret"}
    with pytest.raises(MissingSettingError, match="CIDADAO_SCOPE") as caught:
        CidadaoAuth.from_env(environ=env)
    assert caught.value.names == ("CIDADAO_SCOPE",)
