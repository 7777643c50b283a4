"""StackSpotAuth against the fake Keycloak realm endpoint, over real HTTP."""

from __future__ import annotations

import pytest
import requests

from chaveiro import CredentialsRejectedError, MissingSettingError, StackSpotAuth
from chaveiro._manager import wait_for_renewals
from chaveiro.providers.stackspot import TOKEN_URL, token_url_for
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock
from tests.providers.conftest import call

FORM = "application/x-www-form-urlencoded"


def make(server: FakeTokenServer, **options: object) -> StackSpotAuth:
    settings: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_key": CLIENT_SECRET,
        "token_url": server.stackspot_token_url("acme"),
    }
    settings.update(options)
    return StackSpotAuth(**settings)  # type: ignore[arg-type]


def test_token_request_shape(server: FakeTokenServer, client: str):
    """A form POST to the realm's path with client_id and client_secret = client_key."""
    assert call(client, make(server), server.api_url()) == [200]
    [sent] = server.token_request_log
    assert sent.path == "/acme/oidc/oauth/token"
    assert sent.realm == "acme"
    assert sent.headers["content-type"] == FORM
    assert sent.headers["accept"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.fields == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_realm_builds_the_default_url():
    """The realm goes into the path of the documented host, escaped."""
    assert StackSpotAuth("id", "key", "itau").token_url == TOKEN_URL.format(realm="itau")
    assert TOKEN_URL == "https://idm.stackspot.com/{realm}/oidc/oauth/token"
    assert token_url_for("a b/c") == "https://idm.stackspot.com/a%20b%2Fc/oidc/oauth/token"


def test_token_url_overrides_the_realm(server: FakeTokenServer):
    """token_url= wins over the realm and makes it unnecessary."""
    url = server.stackspot_token_url("other")
    assert StackSpotAuth("id", "key", "itau", token_url=url).token_url == url
    assert StackSpotAuth("id", "key", token_url=url).token_url == url


def test_missing_realm_is_named():
    """Without realm or token_url, the error names the realm."""
    with pytest.raises(MissingSettingError, match="realm") as caught:
        StackSpotAuth("id", "key")
    assert caught.value.names == ("realm",)


def test_missing_client_key_is_named():
    """An empty client_key is reported under its StackSpot name."""
    with pytest.raises(MissingSettingError, match="client_key") as caught:
        StackSpotAuth("id", "", "itau")
    assert caught.value.names == ("client_key",)


def test_many_calls_one_token_request(server: FakeTokenServer, client: str):
    """Fifty API calls share one token."""
    assert call(client, make(server), server.api_url(), times=50) == [200] * 50
    assert server.token_requests == 1


def test_renewal_uses_the_refresh_token(server: FakeTokenServer, client: str):
    """Inside the leeway the token is renewed with the refresh_token grant."""
    clock = FakeClock()
    auth = make(server, clock=clock)
    call(client, auth, server.api_url())
    refresh = auth.get_token().refresh_token
    clock.now += 3600 - 10
    assert call(client, auth, server.api_url()) == [200]
    assert server.grants == ["client_credentials", "refresh_token"]
    renewal = server.token_request_log[-1]
    assert renewal.headers["content-type"] == FORM
    assert renewal.fields == {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_refresh_token_can_be_switched_off(server: FakeTokenServer):
    """use_refresh_token=False renews with the keys."""
    clock = FakeClock()
    auth = make(server, clock=clock, use_refresh_token=False)
    auth.get_token()
    clock.now += 3600 - 10
    auth.get_token()
    wait_for_renewals()  # get_token() renews a still-valid token in the background
    assert server.grants == ["client_credentials", "client_credentials"]


def test_401_replays_with_a_refreshed_token(server: FakeTokenServer, client: str):
    """A 401 renews through the refresh token and the request is replayed once."""
    auth = make(server)
    call(client, auth, server.api_url())
    server.revoke_all(include_refresh=False)
    assert call(client, auth, server.api_url()) == [200]
    assert server.api_unauthorized == 1
    assert server.grants == ["client_credentials", "refresh_token"]


def test_refused_refresh_token_falls_back_to_the_keys(server: FakeTokenServer, client: str):
    """A refused refresh token (invalid_grant) is replaced by a client-credentials fetch."""
    auth = make(server)
    call(client, auth, server.api_url())
    server.revoke_all(include_refresh=True)
    assert call(client, auth, server.api_url()) == [200]
    sent = [r.fields["grant_type"] for r in server.token_request_log]
    assert sent == ["client_credentials", "refresh_token", "client_credentials"]
    assert server.grants == ["client_credentials", "client_credentials"]


def test_expired_refresh_token_is_not_sent(server: FakeTokenServer):
    """Once the refresh token has expired, renewal goes straight to the keys."""
    clock = FakeClock()
    auth = make(server, clock=clock)
    auth.get_token()
    clock.now += 2 * 3600
    auth.get_token()
    sent = [r.fields["grant_type"] for r in server.token_request_log]
    assert sent == ["client_credentials", "client_credentials"]


def test_rejected_keys_raise_a_clear_error(server: FakeTokenServer, client: str):
    """Wrong keys: CredentialsRejectedError with Keycloak's error and description."""
    with pytest.raises(CredentialsRejectedError) as caught:
        call(client, make(server, client_key="wrong"), server.api_url())
    error = caught.value
    assert error.error == "invalid_client"
    assert error.status_code == 401
    assert "Invalid client or Invalid client credentials" in str(error)
    assert "realm" in str(error)
    assert "regenerated" not in str(error)


def test_rejection_after_success_suggests_regenerated_keys(server: FakeTokenServer):
    """invalid_client after the keys worked says they were probably regenerated in the portal."""
    session = requests.Session()
    session.auth = make(server)
    session.get(server.api_url())
    server.revoke_all()
    server.fail(Failure.reject())
    with pytest.raises(CredentialsRejectedError, match="regenerated in the StackSpot portal"):
        session.get(server.api_url())


def test_from_env(server: FakeTokenServer):
    """from_env reads the id, key and realm; the realm is not needed with a token URL."""
    env = {
        "STACKSPOT_CLIENT_ID": CLIENT_ID,
        "STACKSPOT_CLIENT_KEY": CLIENT_SECRET,
        "STACKSPOT_REALM": "itau",
    }
    assert StackSpotAuth.from_env(environ=env).token_url == token_url_for("itau")
    env["STACKSPOT_TOKEN_URL"] = server.stackspot_token_url("acme")
    del env["STACKSPOT_REALM"]
    auth = StackSpotAuth.from_env(environ=env)
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200


def test_from_env_names_every_missing_variable():
    """Missing variables are named, the realm with its alternative."""
    expected = r"STACKSPOT_REALM \(or STACKSPOT_TOKEN_URL\)"
    with pytest.raises(MissingSettingError, match=expected) as caught:
        StackSpotAuth.from_env(environ={})
    assert caught.value.names == ("STACKSPOT_CLIENT_ID", "STACKSPOT_CLIENT_KEY", "STACKSPOT_REALM")


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch):
    """Without environ=, os.environ is read; keyword arguments win over it."""
    monkeypatch.setenv("STACKSPOT_CLIENT_ID", "from-env")
    monkeypatch.setenv("STACKSPOT_CLIENT_KEY", "key")
    monkeypatch.setenv("STACKSPOT_REALM", "itau")
    assert StackSpotAuth.from_env().client_id == "from-env"
    assert StackSpotAuth.from_env(realm="acme").token_url == token_url_for("acme")
