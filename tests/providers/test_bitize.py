"""BitizeAuth against the fake Bitize endpoint, and its date-time parsing."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from chaveiro import BitizeAuth, CredentialsRejectedError, MissingSettingError
from chaveiro._dialect import parse_response
from chaveiro._token import DEFAULT_LIFETIME, jwt_claims
from chaveiro.providers.bitize import DIALECT, OTHER_TOKEN_URL, TOKEN_URL, parse_expiry
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock
from tests.providers.conftest import call, fields_of

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def make(server: FakeTokenServer, **options: object) -> BitizeAuth:
    settings: dict[str, object] = {
        "consumer_key": CLIENT_ID,
        "secret_key": CLIENT_SECRET,
        "token_url": server.bitize_token_url,
    }
    settings.update(options)
    return BitizeAuth(**settings)  # type: ignore[arg-type]


def test_token_request_shape(server: FakeTokenServer, client: str):
    """A JSON body with consumer_key and secret_key only: no grant_type, no Basic header."""
    assert call(client, make(server), server.api_url()) == [200]
    [sent] = server.token_request_log
    assert sent.path == "/auth"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert fields_of(sent) == {"consumer_key": CLIENT_ID, "secret_key": CLIENT_SECRET}


def test_default_and_other_url():
    """The default host is the try-it box's; the API box's host is documented beside it."""
    assert TOKEN_URL == "https://api.bitize.io/auth"
    assert OTHER_TOKEN_URL == "https://api.bitize.com.io/auth"
    assert BitizeAuth("key", "secret").token_url == TOKEN_URL
    assert BitizeAuth("key", "secret", token_url=OTHER_TOKEN_URL).token_url == OTHER_TOKEN_URL


@pytest.mark.parametrize("argument", ["consumer_key", "secret_key"])
def test_missing_key_is_named(argument: str):
    """An empty key is reported under Bitize's own name for it."""
    keys = {"consumer_key": "key", "secret_key": "secret", argument: ""}
    with pytest.raises(MissingSettingError, match=argument) as caught:
        BitizeAuth(**keys)
    assert caught.value.names == (argument,)


@pytest.mark.parametrize("fmt", ["iso_z", "iso_offset", "iso_naive", "space", "br"])
def test_expiry_comes_from_expiration_access_token(
    server: FakeTokenServer, fmt: str, caplog: pytest.LogCaptureFixture
):
    """Every date-time format Bitize may use gives the token's true expiry, without a warning."""
    server.bitize_expiry_format = fmt  # type: ignore[assignment]
    token = make(server).get_token()
    claims = jwt_claims(token.access_token)
    assert claims is not None
    assert token.expires_at == claims["exp"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unreadable_expiry_falls_back_to_the_jwt_exp(
    server: FakeTokenServer, caplog: pytest.LogCaptureFixture
):
    """An unreadable expiration_access_token is logged and the JWT exp is used."""
    server.bitize_expiry_format = "garbage"
    token = make(server).get_token()
    claims = jwt_claims(token.access_token)
    assert claims is not None
    assert token.expires_at == claims["exp"]
    assert "cannot read Bitize's expiration_access_token='amanhã'" in caplog.text


def test_unreadable_expiry_and_opaque_token_use_the_default_lifetime(
    caplog: pytest.LogCaptureFixture,
):
    """Neither a readable date nor a JWT: a short default lifetime, with warnings."""
    body = json.dumps({"access_token": "opaque", "expiration_access_token": "logo mais"})
    token = parse_response(DIALECT, TOKEN_URL, 200, {}, body.encode(), 1000.0)
    assert token.expires_at == 1000.0 + DEFAULT_LIFETIME
    assert "cannot read Bitize's expiration_access_token" in caplog.text
    assert "does not say when the token expires" in caplog.text


def test_many_calls_one_token_request(server: FakeTokenServer, client: str):
    """Fifty API calls share one token."""
    assert call(client, make(server), server.api_url(), times=50) == [200] * 50
    assert server.token_requests == 1


def test_renewal_authenticates_again(server: FakeTokenServer, client: str):
    """Inside the leeway the keys are sent again: Bitize's refresh call is not documented."""
    clock = FakeClock()
    auth = make(server, clock=clock)
    call(client, auth, server.api_url())
    clock.now += 3600 - 10
    assert call(client, auth, server.api_url()) == [200]
    assert server.token_requests == 2
    first, second = server.token_request_log
    assert fields_of(first) == fields_of(second)


def test_401_renews_and_replays(server: FakeTokenServer, client: str):
    """A 401 for the held token renews it and replays the request once."""
    auth = make(server)
    call(client, auth, server.api_url())
    server.revoke_all()
    assert call(client, auth, server.api_url()) == [200]
    assert server.api_unauthorized == 1
    assert server.token_requests == 2


def test_rejected_keys_raise_a_clear_error(server: FakeTokenServer, client: str):
    """Wrong keys: CredentialsRejectedError with Bitize's message and where to get new keys."""
    with pytest.raises(CredentialsRejectedError, match="Unauthorized") as caught:
        call(client, make(server, secret_key="wrong"), server.api_url())
    assert caught.value.status_code == 401
    assert caught.value.error_description == "Unauthorized"
    assert "Integrações" in str(caught.value)


def test_from_env(server: FakeTokenServer):
    """from_env reads both keys and the optional token URL."""
    env = {"BITIZE_CONSUMER_KEY": CLIENT_ID, "BITIZE_SECRET_KEY": CLIENT_SECRET}
    assert BitizeAuth.from_env(environ=env).token_url == TOKEN_URL
    env["BITIZE_TOKEN_URL"] = server.bitize_token_url
    auth = BitizeAuth.from_env(environ=env)
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200


def test_from_env_names_missing_variables():
    """Both missing keys are named."""
    with pytest.raises(MissingSettingError, match="BITIZE_CONSUMER_KEY, BITIZE_SECRET_KEY") as e:
        BitizeAuth.from_env(environ={"BITIZE_TOKEN_URL": TOKEN_URL})
    assert e.value.names == ("BITIZE_CONSUMER_KEY", "BITIZE_SECRET_KEY")


# ---- date-time parsing, property-tested --------------------------------------------------

# Brasília has had no daylight saving time since 2019: every local time names one instant.
local_times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2199, 12, 31))
utc_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)))
def test_iso_z_round_trips(when: datetime):
    """YYYY-MM-DDTHH:MM:SSZ reads back as the same instant."""
    when = when.replace(microsecond=0, tzinfo=timezone.utc)
    assert parse_expiry(when.strftime("%Y-%m-%dT%H:%M:%SZ")) == when.timestamp()


@given(local_times, utc_offsets, st.booleans())
def test_iso_offset_round_trips(when: datetime, offset: timezone, compact: bool):
    """ISO 8601 with any offset (±HH:MM or ±HHMM) and fractions reads back as the same instant."""
    aware = when.replace(tzinfo=offset)
    text = aware.isoformat()
    if compact:
        text = text[:-3] + text[-2:]
    assert parse_expiry(text) == aware.timestamp()


@given(local_times)
def test_iso_naive_round_trips_as_brasilia_time(when: datetime):
    """ISO 8601 without an offset is Brasília time."""
    expected = when.replace(microsecond=0, tzinfo=SAO_PAULO).timestamp()
    assert parse_expiry(when.strftime("%Y-%m-%dT%H:%M:%S")) == expected


@given(local_times)
def test_space_separated_round_trips_as_brasilia_time(when: datetime):
    """YYYY-MM-DD HH:MM:SS is Brasília time."""
    expected = when.replace(microsecond=0, tzinfo=SAO_PAULO).timestamp()
    assert parse_expiry(when.strftime("%Y-%m-%d %H:%M:%S")) == expected


@given(local_times)
def test_brazilian_format_round_trips_as_brasilia_time(when: datetime):
    """DD/MM/YYYY HH:MM:SS is Brasília time."""
    expected = when.replace(microsecond=0, tzinfo=SAO_PAULO).timestamp()
    assert parse_expiry(when.strftime("%d/%m/%Y %H:%M:%S")) == expected


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789-/:.,TZtz+ ", max_size=40),
        st.integers(),
        st.floats(),
        st.binary(),
        st.none(),
        st.lists(st.text(max_size=5), max_size=3),
    )
)
def test_garbage_never_raises(value: object):
    """Any value gives a finite time or None, never an exception."""
    result = parse_expiry(value)
    assert result is None or math.isfinite(result)


@pytest.mark.parametrize(
    "text",
    [
        "amanhã",
        "2030-13-01T00:00:00Z",
        "2030-02-30 10:00:00",
        "31/12/2030 24:00:00",
        "2030-01-01T00:00:00+24:00",
        "2030-01-01",
        "\uff11\uff12/01/2030 00:00:00",
        "",
    ],
)
def test_near_misses_are_unreadable(text: str):
    """Impossible dates, offsets and non-ASCII digits are not guessed at."""
    assert parse_expiry(text) is None
