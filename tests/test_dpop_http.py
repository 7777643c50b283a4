"""DPoP over real HTTP, one rule of RFC 9449 per test, for every HTTP client.

``FakeTokenServer(dpop=True)`` checks each proof strictly (with joserfc); the proofs
it saw are checked again here with PyJWT (``tests/dpop_keys.verify``).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import pytest
import requests

from chaveiro import (
    ClientCredentialsAuth,
    CredentialsRejectedError,
    DPoPNotSupportedError,
    StackSpotAuth,
)
from chaveiro.testing import FakeTokenServer, RecordedRequest
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.dpop_keys import key_pem, verify

Answer = tuple[int, dict[str, Any]]
Call = Callable[..., Answer]


def with_requests(auth: ClientCredentialsAuth, method: str, url: str, **kw: Any) -> Answer:
    with requests.Session() as session:
        session.auth = auth
        response = session.request(method, url, timeout=10, **kw)
        return response.status_code, response.json()


def with_aiohttp(auth: ClientCredentialsAuth, method: str, url: str, **kw: Any) -> Answer:
    async def call() -> Answer:
        async with (
            aiohttp.ClientSession(middlewares=(auth,)) as session,
            session.request(method, url, **kw) as response,
        ):
            return response.status, await response.json()

    return asyncio.run(call())


def with_sync(library: ModuleType) -> Call:
    def call(auth: ClientCredentialsAuth, method: str, url: str, **kw: Any) -> Answer:
        with library.Client(auth=auth, timeout=10, follow_redirects=True) as client:
            response = client.request(method, url, content=kw.get("data"))
            return response.status_code, response.json()

    return call


def with_async(library: ModuleType, loop: str) -> Call:
    def call(auth: ClientCredentialsAuth, method: str, url: str, **kw: Any) -> Answer:
        async def main() -> Answer:
            async with library.AsyncClient(auth=auth, timeout=10, follow_redirects=True) as client:
                response = await client.request(method, url, content=kw.get("data"))
                return response.status_code, response.json()

        return anyio.run(main, backend=loop)

    return call


CLIENTS: dict[str, Call] = {"requests": with_requests, "aiohttp": with_aiohttp}
for _name in ("httpx", "httpx2"):
    if importlib.util.find_spec(_name) is not None:
        _library = importlib.import_module(_name)
        CLIENTS[_name] = with_sync(_library)
        CLIENTS[f"{_name}-asyncio"] = with_async(_library, "asyncio")
        CLIENTS[f"{_name}-trio"] = with_async(_library, "trio")


@pytest.fixture(params=list(CLIENTS))
def call(request: pytest.FixtureRequest) -> Call:
    return CLIENTS[request.param]


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(dpop=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


@pytest.fixture
def nonce_server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(dpop=True, dpop_nonce=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


def auth_for(server: FakeTokenServer, key: Any = None, **kw: Any) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        server.oauth_token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        dpop_key=key_pem("ec") if key is None else key,
        **kw,
    )


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return claims


def proof_of(request: RecordedRequest) -> str:
    return request.headers["dpop"]


# ---- §5, §6, §7: proofs, bound tokens, the DPoP scheme --------------------------------------


@pytest.mark.parametrize("kind", ["ec", "ed25519", "rsa"])
def test_token_and_api_requests_carry_proofs_and_the_token_is_bound(
    server: FakeTokenServer, call: Call, kind: str
):
    """§5: the token request's proof (POST, token URL, no ath); §6 cnf.jkt = the thumbprint;
    §7.1: ``Authorization: DPoP`` with a proof holding htm, htu (no query) and ath."""
    auth = auth_for(server, key_pem(kind))
    status, body = call(auth, "GET", server.api_url("/api/items") + "?page=2")
    assert (status, body["ok"]) == (200, True), body
    token_request = server.token_request_log[-1]
    verify(proof_of(token_request), htm="POST", htu=server.oauth_token_url)
    api_request = server.api_request_log[-1]
    scheme, _, token = api_request.headers["authorization"].partition(" ")
    assert scheme == "DPoP"
    assert claims_of(token)["cnf"] == {"jkt": auth.dpop_thumbprint}
    verify(
        proof_of(api_request),
        htm="GET",
        htu=server.api_url("/api/items"),
        access_token=token,
    )
    assert server.dpop_refusals == []


def test_every_request_gets_a_fresh_proof(server: FakeTokenServer, call: Call):
    """§4.2, §11.1: a new jti for every request, never reused; the server refuses replays."""
    auth = auth_for(server)
    for method in ("GET", "POST", "PUT", "DELETE"):
        assert call(auth, method, server.api_url(), data=b"x")[0] == 200
    proofs = [proof_of(r) for r in server.api_request_log]
    jtis = {claims_of(p)["jti"] for p in proofs}
    assert len(proofs) == len(jtis) == 4
    assert [claims_of(p)["htm"] for p in proofs] == ["GET", "POST", "PUT", "DELETE"]
    replay = requests.get(
        server.api_url(),
        headers={
            "Authorization": server.api_request_log[0].headers["authorization"],
            "DPoP": proofs[0],
        },
        timeout=10,
    )
    assert replay.status_code == 401
    assert server.dpop_refusals == ["jti was seen before: a replayed proof"]


def test_a_bearer_answer_to_a_dpop_request_is_refused(call: Call):
    """§5: a server that ignores DPoP answers token_type Bearer: a typed error that says
    what to do, not a token silently sent unbound."""
    with FakeTokenServer() as plain:  # no DPoP support
        plain.add_client(CLIENT_ID, CLIENT_SECRET)
        auth = auth_for(plain)
        with pytest.raises(DPoPNotSupportedError, match="dpop_allow_bearer=True") as info:
            call(auth, "GET", plain.api_url())
        assert '"Require DPoP bound tokens"' in str(info.value)
        assert plain.api_requests == 0


def test_a_bearer_answer_is_used_as_bearer_when_allowed(call: Call):
    """dpop_allow_bearer=True: the Bearer token goes as Bearer, without a proof."""
    with FakeTokenServer() as plain:
        plain.add_client(CLIENT_ID, CLIENT_SECRET)
        auth = auth_for(plain, dpop_allow_bearer=True)
        assert call(auth, "GET", plain.api_url())[0] == 200
        sent = plain.api_request_log[-1].headers
        assert sent["authorization"].startswith("Bearer ")
        assert "dpop" not in sent
        assert "dpop" in plain.token_request_log[-1].headers  # it was asked for


def test_a_bound_token_never_goes_with_another_key(server: FakeTokenServer, call: Call, tmp_path):
    """§6: two keys never share a token, through any cache; the API refuses a mismatch."""
    from chaveiro import FileCache  # noqa: PLC0415

    cache = FileCache(tmp_path)
    first = auth_for(server, key_pem("ec"), cache=cache)
    second = auth_for(server, key_pem("ed25519"), cache=cache)
    assert call(first, "GET", server.api_url())[0] == 200
    assert call(second, "GET", server.api_url())[0] == 200
    assert server.token_requests == 2
    tokens = [r.headers["authorization"] for r in server.api_request_log]
    assert tokens[0] != tokens[1]
    stolen = requests.get(
        server.api_url(),
        headers={"Authorization": tokens[0], "DPoP": second.dpop_proof("GET", server.api_url())},
        timeout=10,
    )
    assert stolen.status_code == 401
    as_bearer = requests.get(
        server.api_url(), headers={"Authorization": "Bearer " + tokens[0][5:]}, timeout=10
    )
    assert as_bearer.status_code == 401


def test_a_refused_token_is_renewed_and_replayed_with_a_new_proof(
    server: FakeTokenServer, call: Call
):
    """401 invalid_token (revoked): renewal, and the replay carries the new token's ath."""
    auth = auth_for(server)
    assert call(auth, "GET", server.api_url())[0] == 200
    server.revoke_all()
    status, body = call(auth, "POST", server.api_url(), data=b"payload")
    assert (status, body["body_length"]) == (200, 7)
    assert server.token_requests == 2
    last = server.api_request_log[-1]
    token = last.headers["authorization"].partition(" ")[2]
    verify(proof_of(last), htm="POST", htu=server.api_url(), access_token=token)
    assert auth.stats.replayed == 1


# ---- §8: nonces at the token endpoint ------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_jwt"])
def test_token_endpoint_nonce_is_answered_by_one_retry(
    nonce_server: FakeTokenServer, call: Call, method: str
):
    """§8: 400 use_dpop_nonce, one retry with the nonce; a client assertion is made afresh."""
    auth = auth_for(nonce_server, auth_method=method)
    assert call(auth, "GET", nonce_server.api_url())[0] == 200
    first, second = nonce_server.token_request_log[:2]
    assert "nonce" not in claims_of(proof_of(first))
    verify(proof_of(second), htm="POST", htu=nonce_server.oauth_token_url, nonce=_nonce(second))
    assert nonce_server.token_requests == 2
    if method == "client_secret_jwt":
        assertions = [claims_of(r.fields["client_assertion"])["jti"] for r in (first, second)]
        assert assertions[0] != assertions[1]
    assert auth.stats.nonce_retries == 1
    assert nonce_server.dpop_nonce_challenges == 1


def _nonce(request: RecordedRequest) -> str:
    nonce: str = claims_of(proof_of(request))["nonce"]
    return nonce


def test_a_token_endpoint_that_keeps_asking_for_nonces_gets_no_loop(
    nonce_server: FakeTokenServer, call: Call
):
    """Never two nonce retries in a row: the second use_dpop_nonce is the caller's error."""
    nonce_server.dpop_nonce_rotation = "each_request"
    auth = auth_for(nonce_server, max_attempts=3)
    with pytest.raises(CredentialsRejectedError, match="use_dpop_nonce") as info:
        call(auth, "GET", nonce_server.api_url())
    assert info.value.error == "use_dpop_nonce"
    assert nonce_server.token_requests == 2


# ---- §8.2, §9: nonces at the API -------------------------------------------------------------


def test_api_nonce_challenge_resends_once_with_the_body_and_keeps_the_token(
    nonce_server: FakeTokenServer, call: Call
):
    """§9: 401 use_dpop_nonce from the API: the request again, body and all, with the nonce;
    the token is not renewed."""
    auth = auth_for(nonce_server)
    assert call(auth, "GET", nonce_server.api_url())[0] == 200
    nonce_server.rotate_dpop_nonce()
    status, body = call(auth, "PATCH", nonce_server.api_url(), data=b"0123456789")
    assert (status, body["body_length"], body["method"]) == (200, 10, "PATCH")
    refused, resent = nonce_server.api_request_log[-2:]
    assert refused.headers["authorization"] == resent.headers["authorization"]
    token = resent.headers["authorization"].partition(" ")[2]
    verify(
        proof_of(resent),
        htm="PATCH",
        htu=nonce_server.api_url(),
        access_token=token,
        nonce=nonce_server.dpop_nonce,
    )
    assert nonce_server.token_requests == 2  # the first token's nonce retry only
    assert auth.stats.fetched == 1
    assert auth.stats.replayed == 0


def test_a_nonce_on_a_200_replaces_the_remembered_one(nonce_server: FakeTokenServer, call: Call):
    """§8.2: a DPoP-Nonce on any answer is the next proof's nonce: steady traffic with a
    server that changes its nonce at every answer meets no nonce challenge."""
    nonce_server.dpop_nonce_rotation = "each_answer"
    auth = auth_for(nonce_server)
    for _ in range(6):
        assert call(auth, "GET", nonce_server.api_url())[0] == 200
    assert nonce_server.dpop_nonce_challenges == 1  # the very first token request only
    assert nonce_server.api_unauthorized == 0
    nonces = [_nonce(r) for r in nonce_server.api_request_log]
    assert len(set(nonces)) == 6


def test_an_api_that_keeps_asking_for_nonces_gets_no_loop(
    nonce_server: FakeTokenServer, call: Call
):
    """One resend per nonce challenge, and a nonce 401 never renews the token."""
    auth = auth_for(nonce_server)
    assert call(auth, "GET", nonce_server.api_url())[0] == 200
    nonce_server.dpop_nonce_rotation = "each_request"
    before = nonce_server.api_requests
    status, body = call(auth, "GET", nonce_server.api_url())
    assert (status, body["error"]) == (401, "use_dpop_nonce")
    assert nonce_server.api_requests - before == 2
    assert auth.stats.fetched == 1


class NonceAPI(ThreadingHTTPServer):
    """Another API (another origin) with a nonce of its own: it asks for it, then says 200."""

    def __init__(self) -> None:
        self.nonce, self.challenges, self.requests = "other-server-nonce", 0, 0
        super().__init__(("127.0.0.1", 0), _NonceHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/api"


class _NonceHandler(BaseHTTPRequestHandler):
    server: NonceAPI
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.requests += 1
        nonce = claims_of(self.headers.get("DPoP", "a.e30.c")).get("nonce")
        ok = nonce == self.server.nonce
        self.server.challenges += not ok
        body = b"{}" if ok else b'{"error": "use_dpop_nonce"}'
        self.send_response(200 if ok else 401)
        if not ok:
            self.send_header("WWW-Authenticate", 'DPoP error="use_dpop_nonce"')
        self.send_header("DPoP-Nonce", self.server.nonce)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_nonces_are_kept_per_server(nonce_server: FakeTokenServer, call: Call):
    """§9: each server (origin) has its own nonce; alternating between two servers meets
    one challenge per server, not one per request."""
    other = NonceAPI()
    thread = threading.Thread(target=other.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        auth = auth_for(nonce_server)
        for _ in range(3):
            assert call(auth, "GET", nonce_server.api_url())[0] == 200
            assert call(auth, "GET", other.url)[0] == 200
    finally:
        other.shutdown()
        other.server_close()
        thread.join()
    assert (other.requests, other.challenges) == (4, 1)
    assert nonce_server.api_unauthorized == 0  # its nonce came with the token answer
    assert auth.stats.nonce_retries == 2  # the token request's and the other API's


def test_a_stackspot_keycloak_client_with_dpop(server: FakeTokenServer, call: Call):
    """A provider adapter takes dpop_key= too (Keycloak supports DPoP since 26.4)."""
    auth = StackSpotAuth(
        CLIENT_ID, CLIENT_SECRET, token_url=server.stackspot_token_url("acme"), dpop_key=True
    )
    assert call(auth, "GET", server.api_url())[0] == 200
    assert server.api_request_log[-1].headers["authorization"].startswith("DPoP ")
    assert server.dpop_refusals == []


def test_replay_off_still_answers_a_nonce_challenge(nonce_server: FakeTokenServer, call: Call):
    """replay_on_401=False keeps a refused token's 401, but a nonce challenge (the server
    refused the proof before doing anything) is still answered once."""
    auth = auth_for(nonce_server, replay_on_401=False)
    assert call(auth, "GET", nonce_server.api_url())[0] == 200
    nonce_server.rotate_dpop_nonce()
    assert call(auth, "POST", nonce_server.api_url(), data=b"x")[0] == 200
    assert auth.stats.nonce_retries == 2
    nonce_server.revoke_all()
    assert call(auth, "GET", nonce_server.api_url())[0] == 401
    assert auth.stats.fetched == 1


def test_ed25519_by_its_rfc9864_name(server: FakeTokenServer, call: Call):
    """dpop_alg="Ed25519" (RFC 9864's name for EdDSA with Ed25519) is accepted by the fake."""
    auth = auth_for(server, key_pem("ed25519"), dpop_alg="Ed25519")
    assert call(auth, "GET", server.api_url())[0] == 200
    assert claims_of(proof_of(server.api_request_log[-1]))["htm"] == "GET"
    head = proof_of(server.api_request_log[-1]).split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(head + "=="))["alg"] == "Ed25519"
    assert server.dpop_refusals == []
