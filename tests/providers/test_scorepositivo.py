"""ScorePositivoAuth against the fake Laravel Passport endpoint, over real HTTP."""

from __future__ import annotations

import pytest
import requests

from chaveiro import CredentialsRejectedError, MissingSettingError, ScorePositivoAuth
from chaveiro.providers.scorepositivo import TOKEN_URL
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock
from tests.providers.conftest import call, fields_of


def make(server: FakeTokenServer, **options: object) -> ScorePositivoAuth:
    settings: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": server.scorepositivo_token_url,
    }
    settings.update(options)
    return ScorePositivoAuth(**settings)  # type: ignore[arg-type]


def test_token_request_shape(server: FakeTokenServer, client: str):
    """OAuth2 fields as a JSON object of strings, with Content-Type and Accept JSON."""
    assert call(client, make(server), server.api_url()) == [200]
    [sent] = server.token_request_log
    assert sent.path == "/oauth/token"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert "authorization" not in sent.headers
    assert fields_of(sent) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_default_url():
    """The default token URL is Score Positivo's production endpoint."""
    assert TOKEN_URL == "https://core.scorepositivo.com.br/oauth/token"
    assert ScorePositivoAuth("id", "secret").token_url == TOKEN_URL


def test_lifetime_comes_from_expires_in(server: FakeTokenServer):
    """expires_in (3600) sets the token's lifetime."""
    token = make(server).get_token()
    assert token.expires_at - token.issued_at == pytest.approx(3600)


def test_many_calls_one_token_request(server: FakeTokenServer, client: str):
    """Fifty API calls share one token."""
    assert call(client, make(server), server.api_url(), times=50) == [200] * 50
    assert server.token_requests == 1


def test_renewal_fetches_a_new_token(server: FakeTokenServer, client: str):
    """Inside the leeway a new token is fetched; before it, the old one is reused."""
    clock = FakeClock()
    auth = make(server, clock=clock)
    call(client, auth, server.api_url())
    clock.now += 3600 - 31
    call(client, auth, server.api_url())
    assert server.token_requests == 1
    clock.now += 21
    assert call(client, auth, server.api_url()) == [200]
    assert server.token_requests == 2


def test_401_renews_and_replays(server: FakeTokenServer, client: str):
    """A 401 for the held token renews it and replays the request once."""
    auth = make(server)
    call(client, auth, server.api_url())
    server.revoke_all()
    assert call(client, auth, server.api_url()) == [200]
    assert server.api_unauthorized == 1
    assert server.token_requests == 2


def test_rejected_credentials_raise_a_clear_error(server: FakeTokenServer, client: str):
    """A wrong secret: CredentialsRejectedError with Passport's error and description."""
    with pytest.raises(CredentialsRejectedError, match="Client authentication failed") as caught:
        call(client, make(server, client_secret="wrong"), server.api_url())
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 401
    assert "account manager" in str(caught.value)


def test_from_env(server: FakeTokenServer):
    """from_env reads id, secret and the optional token URL."""
    env = {"SCOREPOSITIVO_CLIENT_ID": CLIENT_ID, "SCOREPOSITIVO_CLIENT_SECRET": CLIENT_SECRET}
    assert ScorePositivoAuth.from_env(environ=env).token_url == TOKEN_URL
    env["SCOREPOSITIVO_TOKEN_URL"] = server.scorepositivo_token_url
    auth = ScorePositivoAuth.from_env(environ=env)
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200


def test_from_env_names_the_missing_variable():
    """A missing secret is named."""
    with pytest.raises(MissingSettingError, match="SCOREPOSITIVO_CLIENT_SECRET") as caught:
        ScorePositivoAuth.from_env(environ={"SCOREPOSITIVO_CLIENT_ID": "id"})
    assert caught.value.names == ("SCOREPOSITIVO_CLIENT_SECRET",)


def test_shared_options_are_passed_on(server: FakeTokenServer):
    """The generic keywords (here only_hosts and replay_on_401) work on an adapter."""
    auth = make(server, only_hosts=["example.org"], replay_on_401=False)
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 401
    assert server.token_requests == 0
