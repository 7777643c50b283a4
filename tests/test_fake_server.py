"""Tests of chaveiro.testing.FakeTokenServer, driven with raw httpx calls."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from chaveiro.testing import DIALECTS, Failure, FakeTokenServer

CID, SECRET = "app", "app-secret"
SCOPED, SCOPED_SECRET = "scoped", "scoped-secret"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
CC = {"grant_type": "client_credentials"}


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer() as srv:
        srv.add_client(CID, SECRET)
        srv.add_client(SCOPED, SCOPED_SECRET, scopes=["read", "write"])
        yield srv


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def make_jwt(
    alg: str, claims: dict[str, Any], sign: Callable[[bytes], bytes], typ: str | None = "JWT"
) -> str:
    header = {"alg": alg} if typ is None else {"alg": alg, "typ": typ}
    head = b64u(json.dumps(header).encode())
    signing_input = f"{head}.{b64u(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64u(sign(signing_input.encode()))}"


def hs256(secret: str) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret.encode(), data, hashlib.sha256).digest()


def assertion_claims(server: FakeTokenServer, client_id: str = CID, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": server.oauth_token_url}
    claims |= {"exp": time.time() + 60, "jti": b64u(os.urandom(12))}
    return claims | extra


def post_assertion(http: httpx.Client, server: FakeTokenServer, jwt: str) -> httpx.Response:
    data = {**CC, "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    return http.post(server.oauth_token_url, data={**data, "client_assertion": jwt})


def call_api(
    http: httpx.Client, server: FakeTokenServer, token: str, path: str = "/api/resource"
) -> httpx.Response:
    return http.get(server.api_url(path), headers={"Authorization": f"Bearer {token}"})


def oauth_token(http: httpx.Client, server: FakeTokenServer) -> str:
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, SECRET))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def stackspot(http: httpx.Client, server: FakeTokenServer, **fields: str) -> httpx.Response:
    data = {"client_id": CID, "client_secret": SECRET, **fields}
    return http.post(server.stackspot_token_url(), data=data)


def scorepositivo(http: httpx.Client, server: FakeTokenServer, body: Any) -> httpx.Response:
    return http.post(
        server.scorepositivo_token_url, json=body, headers={"Accept": "application/json"}
    )


SP_BODY = {"grant_type": "client_credentials", "client_id": CID, "client_secret": SECRET}


def good_request(http: httpx.Client, server: FakeTokenServer, dialect: str) -> httpx.Response:
    """A token request that succeeds in ``dialect`` when no failure is scheduled."""
    if dialect == "oauth":
        return http.post(server.oauth_token_url, data=CC, headers=basic(CID, SECRET))
    if dialect == "stackspot":
        return stackspot(http, server, grant_type="client_credentials")
    if dialect == "cidadao":
        data = {**CC, "scope": "read"}
        return http.post(server.cidadao_token_url, data=data, headers=basic(CID, SECRET))
    if dialect == "bitize":
        body = {"consumer_key": CID, "secret_key": SECRET}
        return http.post(server.bitize_token_url, json=body)
    if dialect == "entra":
        return http.post(server.entra_token_url(), data=CC, headers=basic(CID, SECRET))
    return scorepositivo(http, server, SP_BODY)


# --- generic oauth dialect ------------------------------------------------------------------------


def test_oauth_basic_happy_path(http, server):
    """A form request with Basic auth gets a Bearer JWT that the API accepts."""
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, SECRET))
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["expires_in"], int)
    assert "scope" not in body
    claims = claims_of(body["access_token"])
    assert claims["iss"] == server.issuer
    assert claims["sub"] == CID
    assert isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] in (3599, 3600, 3601)
    assert call_api(http, server, body["access_token"]).json()["client_id"] == CID


def test_oauth_client_secret_post_and_json_body(http, server):
    """Credentials in a form body or in a JSON body are both accepted."""
    creds = {**CC, "client_id": CID, "client_secret": SECRET}
    assert http.post(server.oauth_token_url, data=creds).status_code == 200
    assert http.post(server.oauth_token_url, json=creds).status_code == 200


def test_oauth_tokens_are_unique(http, server):
    """Two tokens issued in the same second differ."""
    assert oauth_token(http, server) != oauth_token(http, server)


def test_oauth_rejects_wrong_content_type(http, server):
    """A text/plain body is an invalid_request."""
    resp = http.post(
        server.oauth_token_url,
        content=b"grant_type=client_credentials",
        headers={**basic(CID, SECRET), "Content-Type": "text/plain"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_oauth_rejects_two_auth_methods(http, server):
    """Basic plus client_secret in the body is an invalid_request."""
    data = {**CC, "client_secret": SECRET}
    resp = http.post(server.oauth_token_url, data=data, headers=basic(CID, SECRET))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_oauth_wrong_secret_is_invalid_client(http, server):
    """A bad Basic secret gets 401 invalid_client with a Basic challenge; a bad post secret, 401."""
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, "nope"))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["www-authenticate"].startswith("Basic")
    data = {**CC, "client_id": CID, "client_secret": "nope"}
    resp = http.post(server.oauth_token_url, data=data)
    assert resp.status_code == 401
    assert "www-authenticate" not in resp.headers


def test_oauth_missing_auth_and_grant_errors(http, server):
    """No client auth is invalid_client; missing or other grant types are rejected."""
    assert http.post(server.oauth_token_url, data=CC).json()["error"] == "invalid_client"
    resp = http.post(server.oauth_token_url, data={}, headers=basic(CID, SECRET))
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")
    data = {"grant_type": "password"}
    resp = http.post(server.oauth_token_url, data=data, headers=basic(CID, SECRET))
    assert (resp.status_code, resp.json()["error"]) == (400, "unsupported_grant_type")


def test_oauth_repeated_parameter_is_invalid(http, server):
    """RFC 6749 §3.2: a parameter sent twice is an invalid_request."""
    body = b"grant_type=client_credentials&grant_type=client_credentials"
    headers = {**basic(CID, SECRET), "Content-Type": "application/x-www-form-urlencoded"}
    resp = http.post(server.oauth_token_url, content=body, headers=headers)
    assert resp.json()["error"] == "invalid_request"


def test_basic_decoding_follows_rfc6749(http, server):
    """Basic id and secret are form-urlencoded before base64, so ':' and '%' survive."""
    client_id, secret = "id:with%colon", "p@ss:w%rd +x"
    server.add_client(client_id, secret)
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(client_id, secret))
    assert resp.status_code == 200
    assert claims_of(resp.json()["access_token"])["sub"] == client_id
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    resp = http.post(server.oauth_token_url, data=CC, headers={"Authorization": f"Basic {raw}"})
    assert resp.status_code == 401


def test_malformed_basic_header_is_invalid_client(http, server):
    """A Basic header that is not base64 of id:secret is invalid_client."""
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Bearer x"):
        resp = http.post(server.oauth_token_url, data=CC, headers={"Authorization": value})
        assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")


def test_scope_subset_rules(http, server):
    """A scoped client may ask only for its scopes; an unscoped client for anything."""
    auth = basic(SCOPED, SCOPED_SECRET)
    resp = http.post(server.oauth_token_url, data={**CC, "scope": "read"}, headers=auth)
    assert resp.json()["scope"] == "read"
    assert claims_of(resp.json()["access_token"])["scope"] == "read"
    resp = http.post(server.oauth_token_url, data={**CC, "scope": "read admin"}, headers=auth)
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_scope")
    data = {**CC, "scope": "anything goes"}
    resp = http.post(server.oauth_token_url, data=data, headers=basic(CID, SECRET))
    assert resp.json()["scope"] == "anything goes"


def test_audience_and_resource_are_recorded(http, server):
    """audience/resource end up in the request log and in the token's aud."""
    data = {**CC, "audience": "https://api.example", "resource": "https://r.example"}
    resp = http.post(server.oauth_token_url, data=data, headers=basic(CID, SECRET))
    fields = server.token_request_log[-1].fields
    assert fields["audience"] == "https://api.example"
    assert fields["resource"] == "https://r.example"
    assert claims_of(resp.json()["access_token"])["aud"] == "https://api.example"


# --- client assertions ----------------------------------------------------------------------------


def test_client_secret_jwt(http, server):
    """An HS256 assertion signed with the client secret authenticates the client."""
    resp = post_assertion(http, server, make_jwt("HS256", assertion_claims(server), hs256(SECRET)))
    assert resp.status_code == 200, resp.text
    claims = assertion_claims(server, aud=[server.oauth_token_url])
    assert post_assertion(http, server, make_jwt("HS256", claims, hs256(SECRET))).status_code == 200


@pytest.mark.parametrize("typ", [None, "JWT", "client-authentication+jwt", "application/jwt"])
@pytest.mark.parametrize("aud", ["issuer", "token_endpoint"])
def test_assertion_audience_and_type_accepted(http, server, typ, aud):
    """The issuer (RFC 10070) or the token endpoint as aud; no typ, JWT or RFC 10070's typ."""
    audience = server.issuer if aud == "issuer" else server.oauth_token_url
    jwt = make_jwt("HS256", assertion_claims(server, aud=audience), hs256(SECRET), typ)
    assert post_assertion(http, server, jwt).status_code == 200


@pytest.mark.parametrize(
    ("aud", "typ"),
    [
        ("both", "client-authentication+jwt"),  # audience injection: a second audience
        ("elsewhere", "client-authentication+jwt"),
        ("issuer", "at+jwt"),  # an access token, replayed as an assertion
    ],
)
def test_assertion_audience_and_type_refused(http, server, aud, typ):
    """Two audiences, another server's, or a JWT of another type are invalid_client."""
    audience = {
        "both": [server.issuer, "https://other.example"],
        "elsewhere": "https://other.example/token",
        "issuer": server.issuer,
    }[aud]
    jwt = make_jwt("HS256", assertion_claims(server, aud=audience), hs256(SECRET), typ)
    resp = post_assertion(http, server, jwt)
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    ("aud", "typ", "status"),
    [
        ("issuer", "client-authentication+jwt", 200),
        ("token_endpoint", "client-authentication+jwt", 401),
        ("issuer", "JWT", 401),
        ("issuer_list", "client-authentication+jwt", 401),
    ],
)
def test_strict_assertions(http, server, aud, typ, status):
    """strict_assertions: RFC 10070 only - the issuer as one string, and its typ."""
    server.strict_assertions = True
    audience = {
        "issuer": server.issuer,
        "issuer_list": [server.issuer],
        "token_endpoint": server.oauth_token_url,
    }[aud]
    jwt = make_jwt("HS256", assertion_claims(server, aud=audience), hs256(SECRET), typ)
    assert post_assertion(http, server, jwt).status_code == status


@pytest.mark.parametrize(
    "bad",
    [
        {"aud": "https://elsewhere/token"},
        {"exp": 1},
        {"sub": "someone-else"},
        {"iss": "unknown"},
    ],
)
def test_client_secret_jwt_bad_claims(http, server, bad):
    """Wrong aud, past exp, sub != iss or an unknown issuer are invalid_client."""
    jwt = make_jwt("HS256", assertion_claims(server, **bad), hs256(SECRET))
    resp = post_assertion(http, server, jwt)
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")


def test_client_assertion_bad_signature_alg_none_and_replay(http, server):
    """A wrong key, alg=none and a replayed jti are all rejected."""
    wrong_key = make_jwt("HS256", assertion_claims(server), hs256("wrong"))
    assert post_assertion(http, server, wrong_key).status_code == 401
    unsigned = make_jwt("none", assertion_claims(server), lambda _: b"")
    assert post_assertion(http, server, unsigned).status_code == 401
    jwt = make_jwt("HS256", assertion_claims(server), hs256(SECRET))
    assert post_assertion(http, server, jwt).status_code == 200
    assert post_assertion(http, server, jwt).status_code == 401


def _rsa_signer() -> tuple[Any, Callable[[bytes], bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _ec_signer() -> tuple[Any, Callable[[bytes], bytes]]:
    key = ec.generate_private_key(ec.SECP256R1())

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return key, sign


@pytest.mark.parametrize(("alg", "make"), [("RS256", _rsa_signer), ("ES256", _ec_signer)])
def test_private_key_jwt(http, server, alg, make):
    """RS256/ES256 assertions verify with the registered public key, and only with it."""
    key, sign = make()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server.add_client("pk", "unused", public_key_pem=pem)
    resp = post_assertion(http, server, make_jwt(alg, assertion_claims(server, "pk"), sign))
    assert resp.status_code == 200, resp.text
    _, other_sign = make()
    resp = post_assertion(http, server, make_jwt(alg, assertion_claims(server, "pk"), other_sign))
    assert resp.status_code == 401


def test_auth_methods_supported_is_enforced_and_advertised(http, server):
    """Only advertised methods are accepted, and discovery lists them."""
    server.auth_methods_supported = ["client_secret_post"]
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, SECRET))
    assert resp.status_code == 401
    data = {**CC, "client_id": CID, "client_secret": SECRET}
    assert http.post(server.oauth_token_url, data=data).status_code == 200
    document = http.get(server.issuer + "/.well-known/openid-configuration").json()
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_post"]


def test_discovery_document(http, server):
    """Discovery names the issuer, the token endpoint and client_credentials; it is counted."""
    document = http.get(server.issuer + "/.well-known/openid-configuration").json()
    assert document == {
        "issuer": server.url,
        "token_endpoint": server.oauth_token_url,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "private_key_jwt",
        ],
        "grant_types_supported": ["client_credentials"],
    }
    assert server.discovery_requests == 1
    assert server.token_requests == 0


# --- stackspot (Keycloak) -------------------------------------------------------------------------


def test_stackspot_happy_path(http, server):
    """Form credentials get a Keycloak-shaped answer; the realm is recorded."""
    resp = http.post(
        server.stackspot_token_url("my-realm"),
        data={**CC, "client_id": CID, "client_secret": SECRET},
    )
    body = resp.json()
    assert resp.status_code == 200
    assert set(body) == {
        "access_token",
        "expires_in",
        "refresh_expires_in",
        "refresh_token",
        "token_type",
        "not-before-policy",
        "session_state",
        "scope",
    }
    assert body["scope"] == "attributes email profile roles"
    assert body["refresh_expires_in"] == 3601
    assert server.token_request_log[-1].realm == "my-realm"
    assert server.token_requests_by_dialect["stackspot"] == 1
    assert call_api(http, server, body["access_token"]).status_code == 200


def test_stackspot_accepts_basic(http, server):
    """Keycloak also takes client_secret_basic."""
    resp = http.post(server.stackspot_token_url(), data=CC, headers=basic(CID, SECRET))
    assert resp.status_code == 200


def test_stackspot_strictness(http, server):
    """JSON bodies, bad secrets and a missing grant_type are refused Keycloak-style."""
    resp = http.post(
        server.stackspot_token_url(), json={**CC, "client_id": CID, "client_secret": SECRET}
    )
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")
    resp = stackspot(http, server, grant_type="client_credentials", client_secret="nope")
    assert resp.status_code == 401
    assert resp.json() == KEYCLOAK_REJECT
    resp = stackspot(http, server)
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")


def test_stackspot_refresh_grant(http, server):
    """A valid refresh token yields a new access and refresh token, recorded as refresh_token."""
    first = stackspot(http, server, grant_type="client_credentials").json()
    second = stackspot(
        http, server, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert second.status_code == 200
    body = second.json()
    assert body["access_token"] != first["access_token"]
    assert body["refresh_token"] != first["refresh_token"]
    assert server.grants == ["client_credentials", "refresh_token"]
    assert call_api(http, server, body["access_token"]).status_code == 200


def test_stackspot_refresh_rejections(http, server):
    """Unknown or other-client refresh tokens are invalid_grant; refresh tokens are not bearer."""
    resp = stackspot(http, server, grant_type="refresh_token", refresh_token="made-up")
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_grant", "error_description": "Token is not active"}
    refresh = stackspot(http, server, grant_type="client_credentials").json()["refresh_token"]
    data = {"grant_type": "refresh_token", "refresh_token": refresh}
    resp = http.post(server.stackspot_token_url(), data=data, headers=basic(SCOPED, SCOPED_SECRET))
    assert resp.json()["error"] == "invalid_grant"
    assert call_api(http, server, refresh).status_code == 401


def test_stackspot_refresh_token_expires(http, server):
    """A refresh token past refresh_lifetime is no longer active."""
    server.refresh_lifetime = 0.5
    body = stackspot(http, server, grant_type="client_credentials").json()
    assert body["refresh_expires_in"] == 0.5
    time.sleep(0.6)
    resp = stackspot(http, server, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert resp.json()["error"] == "invalid_grant"


def test_revoke_all_can_spare_refresh_tokens(http, server):
    """revoke_all kills refresh tokens too, unless include_refresh=False."""
    body = stackspot(http, server, grant_type="client_credentials").json()
    server.revoke_all(include_refresh=False)
    assert call_api(http, server, body["access_token"]).status_code == 401
    resp = stackspot(http, server, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert resp.status_code == 200
    server.revoke_all()
    refresh = resp.json()["refresh_token"]
    resp = stackspot(http, server, grant_type="refresh_token", refresh_token=refresh)
    assert resp.json()["error"] == "invalid_grant"


# --- cidadao (IdentityServer) ---------------------------------------------------------------------


def test_cidadao_happy_path(http, server):
    """Basic auth plus an allowed scope gets a JWT with that scope."""
    data = {**CC, "scope": "read write"}
    resp = http.post(server.cidadao_token_url, data=data, headers=basic(SCOPED, SCOPED_SECRET))
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "scope"}
    assert body["scope"] == "read write"
    assert call_api(http, server, body["access_token"]).json()["client_id"] == SCOPED


def test_cidadao_requires_basic(http, server):
    """Credentials in the body instead of Basic, or a wrong secret, are 400 invalid_client."""
    data = {**CC, "scope": "read", "client_id": CID, "client_secret": SECRET}
    resp = http.post(server.cidadao_token_url, data=data)
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_client"}
    resp = http.post(
        server.cidadao_token_url, data={**CC, "scope": "read"}, headers=basic(CID, "x")
    )
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid_client"})


def test_cidadao_scope_rules(http, server):
    """scope is required and must be allowed for the client."""
    auth = basic(SCOPED, SCOPED_SECRET)
    resp = http.post(server.cidadao_token_url, data=CC, headers=auth)
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid_scope"})
    resp = http.post(server.cidadao_token_url, data={**CC, "scope": "admin"}, headers=auth)
    assert resp.json() == {"error": "invalid_scope"}


def test_cidadao_rejects_json(http, server):
    """A JSON body is an invalid_request."""
    resp = http.post(
        server.cidadao_token_url, json={**CC, "scope": "read"}, headers=basic(CID, SECRET)
    )
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")


# --- bitize ---------------------------------------------------------------------------------------


def _parse_bitize(fmt: str, text: str) -> float:
    parsers: dict[str, Callable[[str], datetime]] = {
        "iso_z": lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc),
        "iso_offset": datetime.fromisoformat,
        "iso_naive": lambda s: datetime.fromisoformat(s).replace(tzinfo=SAO_PAULO),
        "space": lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SAO_PAULO),
        "br": lambda s: datetime.strptime(s, "%d/%m/%Y %H:%M:%S").replace(tzinfo=SAO_PAULO),
    }
    return parsers[fmt](text).timestamp()


@pytest.mark.parametrize("fmt", ["iso_z", "iso_offset", "iso_naive", "space", "br"])
def test_bitize_expiry_formats(http, server, fmt):
    """Each format encodes, to the second, the same expiry the server enforces."""
    server.bitize_expiry_format = fmt
    resp = http.post(server.bitize_token_url, json={"consumer_key": CID, "secret_key": SECRET})
    body = resp.json()
    assert resp.status_code == 200
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expiration_access_token",
        "expiration_refresh_token",
    }
    expires = _parse_bitize(fmt, body["expiration_access_token"])
    assert expires == claims_of(body["access_token"])["exp"]
    assert abs(expires - (time.time() + 3600)) < 2
    assert _parse_bitize(fmt, body["expiration_refresh_token"]) > expires
    if fmt == "iso_offset":
        assert body["expiration_access_token"].endswith("-03:00")
    assert call_api(http, server, body["access_token"]).status_code == 200


def test_bitize_garbage_format(http, server):
    """The garbage format answers a date no parser understands."""
    server.bitize_expiry_format = "garbage"
    resp = http.post(server.bitize_token_url, json={"consumer_key": CID, "secret_key": SECRET})
    assert resp.json()["expiration_access_token"] == "amanhã"
    with pytest.raises(ValueError):
        server.bitize_expiry_format = "unix"


def test_bitize_strictness(http, server):
    """Forms, extra or missing fields and non-strings are 400; wrong keys are 401 Unauthorized."""
    good = {"consumer_key": CID, "secret_key": SECRET}
    for bad in ({**good, "grant_type": "x"}, {"consumer_key": CID}, {**good, "secret_key": 1}):
        resp = http.post(server.bitize_token_url, json=bad)
        assert resp.status_code == 400
        assert set(resp.json()) == {"message"}
    assert http.post(server.bitize_token_url, data=good).status_code == 400
    resp = http.post(server.bitize_token_url, json={**good, "secret_key": "wrong"})
    assert (resp.status_code, resp.json()) == (401, {"message": "Unauthorized"})


# --- scorepositivo (Laravel Passport) -------------------------------------------------------------


def test_scorepositivo_happy_path(http, server):
    """JSON with Accept: application/json gets a Passport-shaped token."""
    resp = scorepositivo(http, server, SP_BODY)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"token_type", "expires_in", "access_token"}
    assert call_api(http, server, body["access_token"]).status_code == 200


def test_scorepositivo_strictness(http, server):
    """Missing Accept, a form body, non-string ids and other grants are 400s."""
    resp = http.post(server.scorepositivo_token_url, json=SP_BODY)
    assert resp.status_code == 400
    assert set(resp.json()) == {"error", "error_description", "message"}
    resp = http.post(
        server.scorepositivo_token_url, data=SP_BODY, headers={"Accept": "application/json"}
    )
    assert resp.status_code == 400
    assert scorepositivo(http, server, {**SP_BODY, "client_id": 7}).json()["error"] == (
        "invalid_request"
    )
    resp = scorepositivo(http, server, {**SP_BODY, "grant_type": "password"})
    assert resp.json()["error"] == "unsupported_grant_type"


def test_scorepositivo_wrong_secret(http, server):
    """A wrong secret is Passport's 401 invalid_client."""
    resp = scorepositivo(http, server, {**SP_BODY, "client_secret": "nope"})
    assert resp.status_code == 401
    assert resp.json() == PASSPORT_REJECT


# --- failures -------------------------------------------------------------------------------------


def test_failure_status_with_retry_after(http, server):
    """Failure.status answers that status with Retry-After, before credentials are checked."""
    server.fail(Failure.status(503, retry_after=2), times=1)
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, "wrong"))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "2"
    assert resp.json()["error"] == "temporarily_unavailable"
    assert good_request(http, server, "oauth").status_code == 200


def test_failure_too_many_with_http_date(http, server):
    """Failure.too_many answers 429 and passes an HTTP-date Retry-After through."""
    date = format_datetime(datetime(2030, 1, 1, tzinfo=timezone.utc), usegmt=True)
    server.fail(Failure.too_many(retry_after=date))
    resp = good_request(http, server, "bitize")
    assert (resp.status_code, resp.headers["retry-after"]) == (429, date)


def test_failure_html_malformed_missing(http, server):
    """html, malformed and missing_token answer the broken bodies they promise, in queue order."""
    server.fail(Failure.html(502), times=1)
    server.fail(Failure.malformed(), times=1)
    server.fail(Failure.missing_token(), times=1)
    resp = good_request(http, server, "oauth")
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("text/html")
    assert "<html>" in resp.text
    resp = good_request(http, server, "oauth")
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()
    resp = good_request(http, server, "oauth")
    assert resp.status_code == 200
    assert "access_token" not in resp.json()
    assert good_request(http, server, "oauth").status_code == 200


def test_failure_drop_closes_connection(http, server):
    """Failure.drop closes the connection without an answer; the server keeps serving."""
    server.fail(Failure.drop(), times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        good_request(http, server, "oauth")
    assert good_request(http, server, "oauth").status_code == 200
    assert server.token_requests == 2


def test_failure_slow_and_token_delay(http, server):
    """Failure.slow and token_delay delay the answer, which is then normal."""
    server.fail(Failure.slow(0.3), times=1)
    start = time.monotonic()
    assert good_request(http, server, "oauth").status_code == 200
    assert time.monotonic() - start >= 0.3
    server.token_delay = 0.2
    start = time.monotonic()
    assert good_request(http, server, "oauth").status_code == 200
    assert time.monotonic() - start >= 0.2


PASSPORT_REJECT = {
    "error": "invalid_client",
    "error_description": "Client authentication failed",
    "message": "Client authentication failed",
}
KEYCLOAK_REJECT = {
    "error": "invalid_client",
    "error_description": "Invalid client or Invalid client credentials",
}
RFC6749_REJECT = {"error": "invalid_client", "error_description": "Client authentication failed"}


@pytest.mark.parametrize(
    ("dialect", "status", "body"),
    [
        ("oauth", 401, RFC6749_REJECT),
        ("stackspot", 401, KEYCLOAK_REJECT),
        ("cidadao", 400, {"error": "invalid_client"}),
        ("bitize", 401, {"message": "Unauthorized"}),
        ("scorepositivo", 401, PASSPORT_REJECT),
    ],
)
def test_failure_reject_uses_dialect_shape(http, server, dialect, status, body):
    """Failure.reject answers invalid_client the way each provider does."""
    server.fail(Failure.reject())
    resp = good_request(http, server, dialect)
    assert (resp.status_code, resp.json()) == (status, body)


def test_failure_until_cleared(http, server):
    """times=None fails every request until clear_failures(); all of them are counted."""
    server.fail(Failure.status(500))
    for dialect in DIALECTS:
        assert good_request(http, server, dialect).status_code == 500
    server.clear_failures()
    assert good_request(http, server, "oauth").status_code == 200
    assert server.token_requests == len(DIALECTS) + 1
    assert server.grants == ["client_credentials"]


def test_unlimited_failure_is_replaced(http, server):
    """A new fail() replaces an unlimited failure instead of queueing behind it."""
    server.fail(Failure.status(500))
    server.fail(Failure.status(503), times=1)
    assert good_request(http, server, "oauth").status_code == 503
    assert good_request(http, server, "oauth").status_code == 200


def test_failure_arguments_are_checked(server):
    """Nonsense failure settings raise ValueError."""
    with pytest.raises(ValueError):
        Failure.status(200)
    with pytest.raises(ValueError):
        server.fail(Failure.malformed(), times=0)


# --- the protected API ----------------------------------------------------------------------------


def test_api_requires_a_valid_bearer(http, server):
    """No token, an unknown token or a non-Bearer scheme get 401 invalid_token."""
    token = oauth_token(http, server)
    for headers in ({}, {"Authorization": "Bearer made.up.token"}, {"Authorization": token}):
        resp = http.get(server.api_url(), headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert resp.json() == {"error": "invalid_token"}
    assert (server.api_requests, server.api_unauthorized) == (3, 3)


def test_revoke_all(http, server):
    """After revoke_all, earlier tokens are refused and new ones work."""
    old = oauth_token(http, server)
    server.revoke_all()
    assert call_api(http, server, old).status_code == 401
    assert call_api(http, server, oauth_token(http, server)).status_code == 200


def test_lifetime_expiry(http, server):
    """A token stops working once its lifetime has passed; expires_in keeps the fraction."""
    server.lifetime = 0.5
    resp = http.post(server.oauth_token_url, data=CC, headers=basic(CID, SECRET))
    assert resp.json()["expires_in"] == 0.5
    token = resp.json()["access_token"]
    assert call_api(http, server, token).status_code == 200
    time.sleep(0.6)
    assert call_api(http, server, token).status_code == 401


def test_api_reads_bodies(http, server):
    """Content-Length and chunked bodies are read fully and the connection stays usable."""
    auth = {"Authorization": f"Bearer {oauth_token(http, server)}"}
    resp = http.put(server.api_url("/api/items/1"), content=b"x" * 5000, headers=auth)
    assert resp.json() == {
        "ok": True,
        "client_id": CID,
        "path": "/api/items/1",
        "method": "PUT",
        "body_length": 5000,
    }

    def chunks() -> Iterator[bytes]:
        yield b"abc"
        yield b"defgh"

    resp = http.post(server.api_url(), content=chunks(), headers=auth)
    assert resp.json()["body_length"] == 8
    assert server.api_request_log[-1].headers["transfer-encoding"] == "chunked"
    assert server.api_request_log[-1].body == b"abcdefgh"
    assert http.get(server.api_url(), headers=auth).status_code == 200


def test_expect_100_continue(server):
    """A client that sends Expect: 100-continue is told to go on straight away."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = f"POST /api/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n"
        sock.sendall(f"{head}Expect: 100-continue\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100")
        sock.sendall(b"abc")
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")


def test_api_body_limit(http, server):
    """Bodies over 1 MiB are refused with 413."""
    resp = http.post(server.api_url(), content=b"x" * (1024 * 1024 + 1))
    assert resp.status_code == 413


def test_api_forced_status(http, server):
    """?status= forces the answer for a valid token; without one it is still 401."""
    token = oauth_token(http, server)
    resp = call_api(http, server, token, "/api/resource?status=500")
    assert resp.status_code == 500
    assert resp.json()["ok"] is False
    assert http.get(server.api_url("/api/resource?status=500")).status_code == 401


def test_api_redirect(http, server):
    """/api/redirect answers 302 to ?to= without auth, so clients can cross hosts."""
    with FakeTokenServer() as other:
        target = other.api_url("/api/landing")
        resp = http.get(server.api_url("/api/redirect"), params={"to": target})
        assert (resp.status_code, resp.headers["location"]) == (302, target)
        token = oauth_token(http, server)
        resp = http.get(
            server.api_url("/api/redirect"),
            params={"to": target},
            headers={"Authorization": f"Bearer {token}"},
            follow_redirects=True,
        )
        assert resp.status_code == 401
        assert other.api_request_log[-1].path == "/api/landing"
        assert "authorization" not in other.api_request_log[-1].headers


def test_unknown_path_is_404(http, server):
    """Anything outside the known routes is a JSON 404."""
    resp = http.get(server.url + "/nothing/here")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"


# --- counters, records and lifecycle --------------------------------------------------------------


def test_counters_and_records(http, server):
    """Counters, grants, issued tokens and request logs track what happened; reset zeroes them."""
    for dialect in DIALECTS:
        assert good_request(http, server, dialect).status_code == 200
    assert server.token_requests == 6
    assert server.token_requests_by_dialect == dict.fromkeys(DIALECTS, 1)
    assert server.grants == ["client_credentials"] * 6
    assert len(server.issued_tokens) == 8  # six access tokens, StackSpot and Bitize refresh tokens
    record = server.token_request_log[0]
    assert (record.method, record.path, record.dialect) == ("POST", "/oauth2/token", "oauth")
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.body == b"grant_type=client_credentials"
    issued = server.issued_tokens
    server.reset_counters()
    assert server.token_requests == 0
    assert server.token_requests_by_dialect == dict.fromkeys(DIALECTS, 0)
    assert (server.grants, server.token_request_log, server.api_request_log) == ([], [], [])
    assert server.issued_tokens == issued


def test_concurrent_requests_are_all_counted(http, server):
    """Parallel token requests are each answered and counted exactly once."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: good_request(http, server, "oauth"), range(40)))
    statuses = [resp.status_code for resp in responses]
    assert statuses == [200] * 40
    assert server.token_requests == 40
    assert len(set(server.issued_tokens)) == 40


def test_keep_alive_has_no_nagle_stalls(server):
    """Many small requests on one keep-alive connection are answered promptly (no 40 ms stalls)."""
    with requests.Session() as session:
        start = time.monotonic()
        for _ in range(100):
            assert session.get(server.api_url(), timeout=5).status_code == 401
        elapsed = time.monotonic() - start
    assert elapsed < 2.0  # about 4 s when headers and body go out as two TCP segments


def test_lifecycle():
    """The server binds loopback only, refuses url before start and cuts connections on stop."""
    srv = FakeTokenServer()
    with pytest.raises(RuntimeError):
        _ = srv.url
    with srv, httpx.Client() as client:
        assert srv.url.startswith("http://127.0.0.1:")
        assert client.get(srv.url + "/nope").status_code == 404
        srv.stop()
        with pytest.raises(httpx.TransportError):
            client.get(srv.url + "/nope")


def test_tls(tmp_path):
    """With an ssl_context the server speaks HTTPS at an https:// URL."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with FakeTokenServer(ssl_context=server_ctx) as srv, httpx.Client(verify=client_ctx) as client:
        srv.add_client(CID, SECRET)
        assert srv.url.startswith("https://127.0.0.1:")
        resp = client.post(srv.oauth_token_url, data=CC, headers=basic(CID, SECRET))
        assert resp.status_code == 200
