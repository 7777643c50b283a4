"""FakeTokenServer(dpop=True) is strict: each RFC 9449 §4.3 check refuses a bad proof.

Proofs here are hand-made with joserfc, not by chaveiro, so each can break one rule.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey, OctKey

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.dpop_keys import key_pem

KEY = ECKey.import_key(key_pem("ec"))
OTHER = ECKey.import_key(ECKey.generate_key("P-256").as_pem(private=True))


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(dpop=True, dpop_nonce=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


@pytest.fixture
def token(server: FakeTokenServer) -> str:
    auth = ClientCredentialsAuth(
        server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, dpop_key=key_pem("ec")
    )
    return auth.get_token().access_token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make(
    server: FakeTokenServer,
    token: str | None,
    *,
    header: dict[str, Any] | None = None,
    key: Any = KEY,
    **claims: Any,
) -> str:
    """A proof for ``GET /api/resource`` with the server's nonce, changed by the arguments."""
    base: dict[str, Any] = {
        "jti": b64(time.time_ns().to_bytes(12, "big")),
        "htm": "GET",
        "htu": server.api_url(),
        "iat": int(time.time()),
        "nonce": server.dpop_nonce,
    }
    if token is not None:
        base["ath"] = b64(hashlib.sha256(token.encode()).digest())
    base.update(claims)
    base = {k: v for k, v in base.items() if v is not None}
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.as_dict(private=False)}
    head.update(header or {})
    head = {k: v for k, v in head.items() if v is not None}
    return jws.serialize_compact(head, json.dumps(base), key, algorithms=[head["alg"]])


def api(server: FakeTokenServer, token: str, proof: str, scheme: str = "DPoP") -> int:
    headers = {"Authorization": f"{scheme} {token}", "DPoP": proof}
    return requests.get(server.api_url(), headers=headers, timeout=10).status_code


def test_a_good_hand_made_proof_is_accepted(server: FakeTokenServer, token: str):
    assert api(server, token, make(server, token)) == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"header": {"typ": "JWT"}}, "typ must be dpop+jwt"),
        ({"header": {"jwk": None}}, "the jwk header must be an EC, OKP or RSA public key"),
        ({"header": {"jwk": KEY.as_dict(private=True)}}, "the jwk header holds a private key"),
        ({"key": OTHER}, "the proof's signature does not verify with its jwk"),
        ({"htm": "POST"}, "htm is not GET"),
        ({"htu": "http://127.0.0.1:1/api/other"}, "htu is not"),
        ({"iat": int(time.time()) - 3600}, "iat is outside the accepted window"),
        ({"iat": None}, "iat is missing"),
        ({"jti": None}, "jti is missing"),
        ({"ath": "wrong"}, "ath does not match the access token"),
        ({"nonce": None}, "a DPoP nonce is required"),
        ({"nonce": "stale"}, "a DPoP nonce is required"),
    ],
)
def test_each_broken_rule_is_refused(
    server: FakeTokenServer, token: str, change: dict[str, Any], reason: str
):
    proof = make(server, token, **change)
    assert api(server, token, proof) == 401
    assert server.dpop_refusals[-1].startswith(reason)
    challenge = requests.get(
        server.api_url(), headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10
    ).headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP error=")


def test_alg_none_and_mac_algorithms_are_refused(server: FakeTokenServer, token: str):
    head = {"typ": "dpop+jwt", "alg": "none", "jwk": KEY.as_dict(private=False)}
    claims = {"jti": "x" * 16, "htm": "GET", "htu": server.api_url(), "iat": int(time.time())}
    unsigned = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}.e30"
    assert api(server, token, unsigned) == 401
    assert "'none' is not an accepted" in server.dpop_refusals[-1]
    mac = OctKey.import_key(b"0123456789abcdef0123456789abcdef")
    proof = make(server, token, header={"alg": "HS256"}, key=mac)
    assert api(server, token, proof) == 401
    assert "'HS256' is not an accepted" in server.dpop_refusals[-1]


def test_a_replayed_proof_and_two_proofs_are_refused(server: FakeTokenServer, token: str):
    proof = make(server, token)
    assert api(server, token, proof) == 200
    assert api(server, token, proof) == 401
    assert server.dpop_refusals[-1] == "jti was seen before: a replayed proof"
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    connection.putrequest("GET", "/api/resource")
    for name, value in (("Authorization", f"DPoP {token}"), ("DPoP", proof), ("DPoP", proof)):
        connection.putheader(name, value)
    connection.endheaders()
    assert connection.getresponse().status == 401
    connection.close()
    assert server.dpop_refusals[-1] == "more than one DPoP header"


def test_binding_and_scheme(server: FakeTokenServer, token: str):
    """cnf.jkt: a proof by another key is refused; a bound token as Bearer is refused."""
    other_jwk = OTHER.as_dict(private=False)
    assert api(server, token, make(server, token, header={"jwk": other_jwk}, key=OTHER)) == 401
    assert api(server, token, make(server, token), scheme="Bearer") == 401


def test_a_nonce_challenge_says_so_and_gives_the_nonce(server: FakeTokenServer, token: str):
    """§9: 401, WWW-Authenticate: DPoP error="use_dpop_nonce", and DPoP-Nonce."""
    response = requests.get(
        server.api_url(),
        headers={"Authorization": f"DPoP {token}", "DPoP": make(server, token, nonce=None)},
        timeout=10,
    )
    assert response.status_code == 401
    assert 'error="use_dpop_nonce"' in response.headers["WWW-Authenticate"]
    assert response.headers["DPoP-Nonce"] == server.dpop_nonce


def test_the_token_endpoint_refuses_a_bad_proof_with_400(server: FakeTokenServer):
    """§5 and §8: invalid_dpop_proof, use_dpop_nonce (with DPoP-Nonce) as 400 answers."""
    data = {"grant_type": "client_credentials"}
    auth = (CLIENT_ID, CLIENT_SECRET)
    url = server.oauth_token_url
    bad = make(server, None, htm="GET", htu=url)
    response = requests.post(url, data=data, auth=auth, headers={"DPoP": bad}, timeout=10)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    no_nonce = make(server, None, htm="POST", htu=url, nonce=None)
    response = requests.post(url, data=data, auth=auth, headers={"DPoP": no_nonce}, timeout=10)
    assert (response.status_code, response.json()["error"]) == (400, "use_dpop_nonce")
    assert response.headers["DPoP-Nonce"] == server.dpop_nonce
    good = make(server, None, htm="POST", htu=url)
    response = requests.post(url, data=data, auth=auth, headers={"DPoP": good}, timeout=10)
    assert response.json()["token_type"] == "DPoP"


def test_dpop_required_refuses_a_token_request_without_a_proof(server: FakeTokenServer):
    server.dpop_required = True
    auth = ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    response = requests.post(
        server.oauth_token_url,
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    assert auth.dpop_thumbprint is None


def test_dpop_nonce_needs_dpop():
    with pytest.raises(ValueError, match="dpop_nonce=True needs dpop=True"):
        FakeTokenServer(dpop_nonce=True)
