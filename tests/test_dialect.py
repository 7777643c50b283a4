"""Building token requests and parsing answers (sans I/O), and each auth method over HTTP."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chaveiro import (
    ConfigurationError,
    CredentialsRejectedError,
    InvalidTokenResponseError,
    TokenEndpointError,
)
from chaveiro._dialect import (
    OAUTH2,
    ClientSettings,
    Dialect,
    TokenRequest,
    build_request,
    parse_response,
)
from chaveiro.testing import ClientCertificate, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

NOW = 1_800_000_000.0
URL = "https://idp.example.com/token"


def settings(**kwargs: object) -> ClientSettings:
    options: dict[str, object] = {"token_url": URL, "client_id": "id", "client_secret": "secret"}
    options.update(kwargs)
    return ClientSettings(**options)  # type: ignore[arg-type]


def test_basic_credentials_are_form_encoded_first():
    """client_secret_basic form-encodes id and secret before base64 (RFC 6749 §2.3.1)."""
    request = build_request(OAUTH2, settings(client_id="a:b c", client_secret="p%s&w+"), NOW)
    header = dict(request.headers)["Authorization"]
    raw = base64.b64decode(header.removeprefix("Basic ")).decode()
    user, _, password = raw.partition(":")
    assert (user, password) == ("a%3Ab+c", "p%25s%26w%2B")
    assert (unquote_plus(user), unquote_plus(password)) == ("a:b c", "p%s&w+")
    assert parse_qs(request.body.decode()) == {"grant_type": ["client_credentials"]}


def test_post_puts_credentials_in_the_form():
    """client_secret_post sends id and secret as form fields."""
    request = build_request(OAUTH2, settings(auth_method="client_secret_post", scope="a b"), NOW)
    assert parse_qs(request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["id"],
        "client_secret": ["secret"],
        "scope": ["a b"],
    }
    assert "Authorization" not in dict(request.headers)


def test_json_body():
    """client_secret_json sends the fields as a JSON object."""
    request = build_request(
        OAUTH2, settings(auth_method="client_secret_json", extra=(("audience", "api"),)), NOW
    )
    assert dict(request.headers)["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "grant_type": "client_credentials",
        "client_id": "id",
        "client_secret": "secret",
        "audience": "api",
    }


def test_reserved_extra_fields_are_refused():
    """extra_params cannot overwrite grant_type, client_id or the secret."""
    with pytest.raises(ConfigurationError, match="client_secret"):
        settings(extra=(("client_secret", "x"),))


def test_unknown_auth_method():
    """An unknown auth_method is a configuration error listing the valid ones."""
    with pytest.raises(ConfigurationError, match="client_secret_basic"):
        settings(auth_method="magic")


def test_private_key_jwt_needs_a_key():
    """private_key_jwt without a key, or with garbage, fails at construction."""
    with pytest.raises(ConfigurationError, match="private_key"):
        settings(auth_method="private_key_jwt", client_secret=None)
    with pytest.raises(ConfigurationError, match="PEM"):
        settings(auth_method="private_key_jwt", private_key=b"not a key")


def test_parse_success():
    """A standard answer becomes a Token with its expiry and scope."""
    body = json.dumps(
        {"access_token": "abc", "token_type": "bearer", "expires_in": 60, "scope": "x"}
    )
    token = parse_response(OAUTH2, URL, 200, {}, body.encode(), NOW)
    assert (token.access_token, token.expires_at, token.scope) == ("abc", NOW + 60, "x")
    assert token.authorization == "Bearer abc"


def test_parse_rfc6749_error():
    """An RFC 6749 §5.2 error keeps error, description and status."""
    body = b'{"error": "invalid_scope", "error_description": "scope x not allowed"}'
    with pytest.raises(CredentialsRejectedError, match="Check the scope") as info:
        parse_response(OAUTH2, URL, 400, {}, body, NOW)
    assert info.value.error == "invalid_scope"
    assert info.value.error_description == "scope x not allowed"
    assert info.value.status_code == 400


def test_parse_error_in_a_200():
    """A 200 that carries an error field is still an error."""
    with pytest.raises(CredentialsRejectedError):
        parse_response(OAUTH2, URL, 200, {}, b'{"error": "invalid_client"}', NOW)


def test_parse_retry_after_on_503():
    """A 503 is a retryable TokenEndpointError with Retry-After in seconds."""
    with pytest.raises(TokenEndpointError) as info:
        parse_response(OAUTH2, URL, 503, {"retry-after": "7"}, b"", NOW)
    assert info.value.retryable
    assert info.value.retry_after == 7


def test_parse_unsupported_token_type():
    """A non-bearer token type is refused with a clear message."""
    body = b'{"access_token": "a", "token_type": "DPoP"}'
    with pytest.raises(InvalidTokenResponseError, match=r"Bearer tokens \(DPoP: pass dpop_key"):
        parse_response(OAUTH2, URL, 200, {}, body, NOW)
    body = b'{"access_token": "a", "token_type": "MAC"}'
    with pytest.raises(InvalidTokenResponseError, match="'MAC'; chaveiro was set to send Bearer"):
        parse_response(OAUTH2, URL, 200, {}, body, NOW)


def test_parse_form_encoded_answer():
    """An answer the server labels form-encoded is read as such."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    token = parse_response(OAUTH2, URL, 200, headers, b"access_token=t&expires_in=30", NOW)
    assert token.expires_at == NOW + 30


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize(
    "auth_method",
    ["client_secret_basic", "client_secret_post", "client_secret_json", "client_secret_jwt"],
)
def test_secret_methods_against_the_server(server: FakeTokenServer, make_auth, auth_method: str):
    """Every secret-based method is accepted by a strict RFC 6749 server."""
    auth = make_auth(auth_method=auth_method, scope="read")
    assert requests.get(server.api_url(), auth=auth, timeout=5).status_code == 200
    assert server.token_request_log[-1].fields.get("scope") == "read"


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_private_key_jwt_against_the_server(
    server: FakeTokenServer,
    make_auth,
    alg: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
):
    """private_key_jwt signs an assertion the server verifies with the public key."""
    private, public = _pem(key)
    server.add_client("pk-client", "unused-secret", public_key_pem=public)
    auth = make_auth(
        client_id="pk-client",
        client_secret=None,
        auth_method="private_key_jwt",
        private_key=private.decode(),
        signing_alg=alg,
        key_id="k1",
    )
    assert requests.get(server.api_url(), auth=auth, timeout=5).status_code == 200
    fields = server.token_request_log[-1].fields
    assert fields["client_assertion_type"].endswith("jwt-bearer")
    assert "client_secret" not in fields


def test_audience_and_resource_are_sent(server: FakeTokenServer, make_auth):
    """audience= and resource= travel in the token request and split the cache."""
    make_auth(audience="orders", resource="https://api.example.com").get_token()
    fields = server.token_request_log[-1].fields
    assert fields["audience"] == "orders"
    assert fields["resource"] == "https://api.example.com"
    make_auth(audience="billing").get_token()
    assert server.token_requests == 2


def test_wrong_secret_with_jwt_method(server: FakeTokenServer, make_auth):
    """A client assertion signed with the wrong secret is rejected as invalid_client."""
    auth = make_auth(auth_method="client_secret_jwt", client_secret="wrong-" + CLIENT_SECRET)
    with pytest.raises(CredentialsRejectedError) as info:
        auth.get_token()
    assert info.value.error == "invalid_client"
    assert CLIENT_ID in server.token_request_log[-1].fields.get("client_id", CLIENT_ID)


def test_short_secret_with_client_secret_jwt(server: FakeTokenServer, make_auth):
    """A short secret still signs an HS256 assertion (no warning raised at request time)."""
    server.add_client("short", "abc")
    auth = make_auth(client_id="short", client_secret="abc", auth_method="client_secret_jwt")
    assert auth.get_token().access_token in server.issued_tokens


# --- client certificates (RFC 8705) and the bank quirks -------------------------------------------


@pytest.mark.parametrize("method", ["tls_client_auth", "self_signed_tls_client_auth"])
def test_certificate_methods_send_the_client_id_and_no_secret(method: str):
    """tls_client_auth: client_id in the form, no secret, no Authorization header."""
    request = build_request(
        OAUTH2, settings(auth_method=method, client_secret=None, scope="cob.read"), NOW
    )
    assert parse_qs(request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["id"],
        "scope": ["cob.read"],
    }
    assert "Authorization" not in dict(request.headers)
    assert request.url == URL


def test_certificate_methods_refuse_a_secret():
    """A secret given with tls_client_auth is a mistake, named with what to do instead."""
    with pytest.raises(ConfigurationError, match="client_secret_post"):
        settings(auth_method="tls_client_auth")


def test_basic_with_a_json_body():
    """Efí: HTTP Basic and the grant as a JSON object, from the dialect or the settings."""
    for dialect, options in [
        (Dialect(body_format="json"), {}),
        (OAUTH2, {"body_format": "json"}),
    ]:
        request = build_request(dialect, settings(**options), NOW)
        headers = dict(request.headers)
        assert headers["Authorization"].startswith("Basic ")
        assert headers["Content-Type"] == "application/json"
        assert json.loads(request.body) == {"grant_type": "client_credentials"}
    form = build_request(Dialect(body_format="json"), settings(body_format="form"), NOW)
    assert dict(form.headers)["Content-Type"] == "application/x-www-form-urlencoded"


def test_grant_type_in_the_query_string():
    """Santander: grant_type in the URL, credentials in the form; a URL's own query is kept."""
    request = build_request(
        OAUTH2, settings(auth_method="client_secret_post", grant_type_in="query"), NOW
    )
    assert request.url == URL + "?grant_type=client_credentials"
    assert parse_qs(request.body.decode()) == {"client_id": ["id"], "client_secret": ["secret"]}
    dialect = Dialect(grant_type_in="query")
    kept = build_request(dialect, settings(token_url=URL + "?tenant=a"), NOW)
    assert kept.url == URL + "?tenant=a&grant_type=client_credentials"
    refresh = build_request(dialect, settings(), NOW, refresh_token="r1")
    assert refresh.url == URL + "?grant_type=refresh_token"
    assert parse_qs(refresh.body.decode()) == {"refresh_token": ["r1"]}
    in_body = build_request(dialect, settings(grant_type_in="body"), NOW)
    assert in_body.url == URL


@pytest.mark.parametrize(("option", "value"), [("body_format", "xml"), ("grant_type_in", "header")])
def test_unknown_placements_are_refused(option: str, value: str):
    """body_format and grant_type_in accept only the values they name."""
    with pytest.raises(ConfigurationError, match=option):
        settings(**{option: value})


def _send(
    server: FakeTokenServer, request: TokenRequest, context: ssl.SSLContext
) -> httpx.Response:
    with httpx.Client(verify=context, timeout=10) as client:
        return client.post(request.url, content=request.body, headers=list(request.headers))


@pytest.fixture
def mtls_server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(mtls=True) as srv:
        yield srv


def _context(server: FakeTokenServer, cert: ClientCertificate, tmp_path: Path) -> ssl.SSLContext:
    pem = tmp_path / "client.pem"
    pem.write_bytes(cert.combined_pem)
    context = ssl.create_default_context(cafile=server.ca_file)
    context.load_cert_chain(pem)
    return context


def test_tls_client_auth_request_is_accepted_over_mtls(mtls_server: FakeTokenServer, tmp_path):
    """The request tls_client_auth builds gets a token bound to the certificate."""
    cert = mtls_server.issue_client_cert("pix.example")
    mtls_server.add_client("pix", tls_client_auth_san_dns="pix.example")
    options = {"client_id": "pix", "client_secret": None, "auth_method": "tls_client_auth"}
    request = build_request(OAUTH2, settings(token_url=mtls_server.oauth_token_url, **options), NOW)
    response = _send(mtls_server, request, _context(mtls_server, cert, tmp_path))
    assert response.status_code == 200, response.text
    token = parse_response(OAUTH2, request.url, 200, response.headers, response.content, NOW)
    assert token.access_token in mtls_server.issued_tokens


@pytest.mark.parametrize(
    "options",
    [
        {"body_format": "json"},
        {"auth_method": "client_secret_post", "grant_type_in": "query"},
    ],
)
def test_bank_shapes_are_accepted_by_the_server(mtls_server: FakeTokenServer, tmp_path, options):
    """Basic + JSON (Efí) and grant_type in the query (Santander) reach a token."""
    cert = mtls_server.issue_client_cert("app.example")
    mtls_server.add_client("app", "app-secret")
    built = settings(
        token_url=mtls_server.oauth_token_url,
        client_id="app",
        client_secret="app-secret",
        **options,
    )
    response = _send(
        mtls_server, build_request(OAUTH2, built, NOW), _context(mtls_server, cert, tmp_path)
    )
    assert response.status_code == 200, response.text
    assert mtls_server.grants == ["client_credentials"]
