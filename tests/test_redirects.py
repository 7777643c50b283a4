"""Credentials go to token_url only: a token endpoint's redirect is an error, never followed.

Every client authentication method, every redirect status, to the same origin
and to another one, with clients that follow redirects and clients that do
not: the redirect's target receives nothing at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import anyio
import httpx
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chaveiro import (
    ClientCredentialsAuth,
    ConfigurationError,
    CredentialsRejectedError,
    TokenEndpointError,
)
from chaveiro.testing import FakeTokenServer
from tests._recorder import Answer, Recorder, Seen, token_answer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

STATUSES = [301, 302, 303, 307, 308]
METHODS = [
    "client_secret_basic",
    "client_secret_post",
    "client_secret_json",
    "client_secret_jwt",
    "private_key_jwt",
]
CLIENTS = ["requests", "httpx", "httpx-no-follow", "httpx-async", "aget_token"]

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


class Redirecting:
    """A token endpoint at ``/token`` that answers ``status`` with a ``Location``."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.location = ""

    def __call__(self, seen: Seen) -> Answer:
        if seen.path.startswith("/token"):
            return self.status, {"Location": self.location}, b""
        return token_answer()


@pytest.fixture
def landing() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


def _auth(token_url: str, method: str) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        token_url,
        CLIENT_ID,
        None if method == "private_key_jwt" else CLIENT_SECRET,
        auth_method=method,
        private_key=_KEY if method == "private_key_jwt" else None,
        max_attempts=1,
    )


def _fetch(auth: ClientCredentialsAuth, client: str, api: str) -> None:
    """Make the auth object fetch a token with ``client``."""
    if client == "requests":
        requests.get(api, auth=auth, timeout=5)
    elif client in ("httpx", "httpx-no-follow"):
        with httpx.Client(auth=auth, follow_redirects=client == "httpx") as http:
            http.get(api)
    else:

        async def run() -> None:
            async with httpx.AsyncClient(auth=auth, follow_redirects=True) as http:
                if client == "aget_token":
                    await auth.aget_token(client=http)
                else:
                    await http.get(api)

        anyio.run(run)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("origin", ["same", "other"])
def test_a_redirect_from_the_token_endpoint_reaches_nobody(
    origin: str, status: int, method: str, client: str, landing: Recorder
):
    """The fetch ends with an error naming the status and Location; the target got nothing."""
    script = Redirecting(status)
    with Recorder(script) as idp:
        script.location = idp.url("/landing/token") if origin == "same" else landing.url("/token")
        auth = _auth(idp.url("/token"), method)
        with pytest.raises(TokenEndpointError) as info:
            _fetch(auth, client, idp.url("/api"))
        message = str(info.value)
        assert not isinstance(info.value, CredentialsRejectedError)
        assert f"HTTP {status}" in message
        assert script.location in message
        assert "Set token_url to the final address" in message
        assert [seen.path for seen in idp.seen] == ["/token"]  # one request, to token_url only
    assert landing.seen == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_missing_trailing_slash_is_named_not_blamed_on_the_credentials(
    client: str, landing: Recorder
):
    """A server that insists on a trailing slash: the error shows the address to use."""

    def script(seen: Seen) -> Answer:
        if seen.path == "/o/token":
            return 301, {"Location": "/o/token/"}, b""
        return 405, {"Content-Type": "application/json"}, b'{"detail": "Method not allowed"}'

    with Recorder(script) as idp:
        auth = _auth(idp.url("/o/token"), "client_secret_post")
        with pytest.raises(TokenEndpointError, match="/o/token/") as info:
            _fetch(auth, client, idp.url("/api"))
        assert not isinstance(info.value, CredentialsRejectedError)
        assert [seen.path for seen in idp.seen] == ["/o/token"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, b'{"detail": "Not found."}'),
        (404, b'{"error": "not_found"}'),
        (405, b""),
        (403, b"<html>Forbidden</html>"),
        (400, b'{"message": "bad request"}'),
    ],
)
def test_a_wrong_url_or_method_is_not_rejected_credentials(status: int, body: bytes):
    """Only an OAuth error answer is a CredentialsRejectedError; the rest says what to check."""
    answer = (status, {"Content-Type": "application/json"}, body)
    with Recorder(lambda seen: answer) as idp, pytest.raises(TokenEndpointError) as info:
        _auth(idp.url("/token"), "client_secret_basic").get_token()
    assert not isinstance(info.value, CredentialsRejectedError)
    assert info.value.status_code == status
    if status in (404, 405):
        assert "URL or the method looks wrong" in str(info.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": "invalid_client"}),
        (400, {"error": "invalid_scope", "error_description": "no"}),
        (401, {"error": "invalid_client"}),
        (401, {}),
        (403, {"error": "unauthorized_client"}),
    ],
)
def test_an_oauth_error_answer_is_rejected_credentials(status: int, body: dict[str, str]):
    """RFC 6749 §5.2 answers (and a bare 401) are the provider's verdict on the credentials."""
    payload = json.dumps(body).encode()
    answer = (status, {"Content-Type": "application/json"}, payload)
    with Recorder(lambda seen: answer) as idp, pytest.raises(CredentialsRejectedError) as info:
        _auth(idp.url("/token"), "client_secret_basic").get_token()
    assert info.value.status_code == status


# ---- renew_on: APIs that answer 403 to a dead token ---------------------------------------------


class DeadTokenApi:
    """An API that answers 403 (no challenge) to tokens in ``dead``, 200 to any other."""

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.tokens: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, seen: Seen) -> Answer:
        token = seen.headers.get("authorization", "").partition(" ")[2]
        with self.lock:
            self.tokens.append(token)
        if not token or token in self.dead:
            return 403, {"Content-Type": "application/json"}, b'{"detail": "forbidden"}'
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


def _status_after_revocation(server: FakeTokenServer, client: str, renew_on: tuple[int, ...]):
    api = DeadTokenApi()
    auth = ClientCredentialsAuth(
        server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, renew_on=renew_on
    )
    with Recorder(api) as rec:
        url = rec.url("/orders")
        if client == "requests":
            session = requests.Session()
            session.auth = auth
            assert session.get(url, timeout=5).status_code == 200
            api.dead.add(api.tokens[-1])
            status = session.get(url, timeout=5).status_code
        elif client == "httpx":
            with httpx.Client(auth=auth) as http:
                assert http.get(url).status_code == 200
                api.dead.add(api.tokens[-1])
                status = http.get(url).status_code
        else:

            async def run() -> int:
                async with httpx.AsyncClient(auth=auth) as http:
                    assert (await http.get(url)).status_code == 200
                    api.dead.add(api.tokens[-1])
                    return (await http.get(url)).status_code

            status = anyio.run(run)
    return status, api


@pytest.mark.parametrize("client", ["requests", "httpx", "httpx-async"])
def test_renew_on_403_renews_and_replays_once(server: FakeTokenServer, client: str):
    """With renew_on=(401, 403), a 403 to our token renews it once and replays the request."""
    status, api = _status_after_revocation(server, client, (401, 403))
    assert status == 200
    assert server.token_requests == 2
    assert len(api.tokens) == 3  # first call, the 403, the replay with the new token
    assert api.tokens[2] != api.tokens[1]


@pytest.mark.parametrize("client", ["requests", "httpx", "httpx-async"])
def test_a_403_is_no_renewal_signal_by_default(server: FakeTokenServer, client: str):
    """By default a 403 (a missing scope, usually) goes back to the caller as it is."""
    status, api = _status_after_revocation(server, client, (401,))
    assert status == 403
    assert server.token_requests == 1
    assert len(api.tokens) == 2


def test_a_persistent_403_is_replayed_once_only(server: FakeTokenServer):
    """A 403 that a new token does not cure is returned after one replay: never a loop."""
    api = DeadTokenApi()
    api.dead.add("")  # nothing passes
    with Recorder(lambda seen: (403, {}, b"")) as rec:
        session = requests.Session()
        session.auth = ClientCredentialsAuth(
            server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, renew_on=(401, 403)
        )
        response = session.get(rec.url("/orders"), timeout=5)
        assert response.status_code == 403
        assert len(rec.seen) == 2
    assert server.token_requests == 2


@pytest.mark.parametrize("renew_on", [(500,), (), "401", (401.0,), (True,), None])
def test_renew_on_takes_401_and_403_only(renew_on: object):
    """A status that cannot mean "token dead" is refused at construction, saying what to pass."""
    with pytest.raises(ConfigurationError, match="renew_on"):
        ClientCredentialsAuth(
            "https://idp.example.com/token",
            CLIENT_ID,
            CLIENT_SECRET,
            renew_on=renew_on,  # type: ignore[arg-type]
        )
