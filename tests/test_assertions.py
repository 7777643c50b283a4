"""chaveiro's own client assertions (private_key_jwt, client_secret_jwt) as RFC 10070 has them.

``typ: client-authentication+jwt``; ``aud`` the issuer when known, else the
token endpoint (``assertion_audience=`` switches); ``iss`` = ``sub`` = the
client id; a new ``jti`` for every token request; ``exp`` at most 300 s after
``iat`` (120 s). Over HTTP against the fake server in strict RFC 10070 mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs

import pytest
import requests
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chaveiro import ClientCredentialsAuth, ConfigurationError, CredentialsRejectedError
from chaveiro._dialect import OAUTH2, ClientSettings, build_request
from chaveiro._settings import ClientSettings as Settings
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

NOW = 1_800_000_000.0
URL = "https://idp.example.com/oauth2/token"
ISSUER = "https://idp.example.com/"


def _part(jwt: str, index: int) -> dict[str, object]:
    segment = jwt.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def _assertion_of(body: bytes) -> str:
    return parse_qs(body.decode())["client_assertion"][0]


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _settings(audience: str | None = None, **kwargs: object) -> ClientSettings:
    from chaveiro._assertions import AssertionSettings  # noqa: PLC0415

    options: dict[str, object] = {
        "token_url": URL,
        "client_id": "app",
        "client_secret": "s3cret-s3cret-s3cret-s3cret-s3cret",
        "auth_method": "client_secret_jwt",
        "assertions": AssertionSettings(issuer=ISSUER, audience=audience),
    }
    options.update(kwargs)
    return Settings(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("audience", "aud"), [(ISSUER, ISSUER), (None, URL), ("urn:x", "urn:x")])
def test_header_and_claims(audience, aud):
    """typ, iss = sub = client id, aud as one string, exp - iat = 120 (at most 300), a jti."""
    request = build_request(OAUTH2, _settings(audience), NOW)
    fields = parse_qs(request.body.decode())
    assert fields["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assertion = fields["client_assertion"][0]
    assert _part(assertion, 0) == {"alg": "HS256", "typ": "client-authentication+jwt"}
    claims = _part(assertion, 1)
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("app", "app", aud)
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 120
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_every_request_has_a_new_jti():
    """Two token requests built at the same instant carry two different jti."""
    settings = _settings(ISSUER)
    jtis = {_part(_assertion_of(build_request(OAUTH2, settings, NOW).body), 1)["jti"]}
    jtis |= {_part(_assertion_of(build_request(OAUTH2, settings, NOW).body), 1)["jti"]}
    assert len(jtis) == 2


@pytest.mark.parametrize(
    ("given", "issuer", "aud"),
    [
        ("issuer", ISSUER, ISSUER),
        ("issuer", None, URL),
        ("token_endpoint", ISSUER, URL),
        ("https://other.example/as", ISSUER, "https://other.example/as"),
    ],
)
def test_assertion_audience_choice(given, issuer, aud):
    """assertion_audience: the issuer (default, else the endpoint), the endpoint, or as given."""
    auth = ClientCredentialsAuth(
        URL, "app", "s3cret", auth_method="client_secret_jwt", issuer=issuer,
        assertion_audience=given,
    )  # fmt: skip
    request = build_request(OAUTH2, auth._settings, NOW)
    assert _part(_assertion_of(request.body), 1)["aud"] == aud


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"assertion_audience": ""}, "assertion_audience"),
        ({"assertion_audience": None}, "assertion_audience"),
        ({"issuer": "ftp://idp.example.com"}, "issuer"),
        ({"issuer": "http://idp.example.com"}, "issuer"),
    ],
)
def test_bad_audience_settings(kwargs, words):
    """A bad assertion_audience or issuer fails at construction, naming it."""
    with pytest.raises(ConfigurationError, match=words):
        ClientCredentialsAuth(URL, "app", "s3cret", auth_method="client_secret_jwt", **kwargs)


def test_certificate_thumbprints_in_the_header(rsa_pem):
    """A key PEM that also holds its certificate puts x5t#S256 and x5t in the header."""
    ca = trustme.CA()
    leaf = ca.issue_cert("app.example")
    bundle = leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes()
    auth = ClientCredentialsAuth(
        URL, "app", private_key=bundle, auth_method="private_key_jwt", signing_alg="ES256"
    )
    header = _part(_assertion_of(build_request(OAUTH2, auth._settings, NOW).body), 0)
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER
    )

    def b64(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    assert header["x5t#S256"] == b64(hashlib.sha256(der).digest())
    assert header["x5t"] == b64(hashlib.sha1(der).digest())
    assert header["typ"] == "client-authentication+jwt"
    plain = ClientCredentialsAuth(URL, "app", private_key=rsa_pem[0], auth_method="private_key_jwt")
    assert "x5t#S256" not in _part(
        _assertion_of(build_request(OAUTH2, plain._settings, NOW).body), 0
    )


def test_a_certificate_of_another_key_is_refused(rsa_pem):
    """A certificate that is not the key's own fails at construction."""
    leaf = trustme.CA().issue_cert("app.example")
    with pytest.raises(ConfigurationError, match="not the key's own"):
        ClientCredentialsAuth(
            URL, "app", private_key=rsa_pem[0] + leaf.cert_chain_pems[0].bytes(),
            auth_method="private_key_jwt",
        )  # fmt: skip


# --- over HTTP, against a server that accepts RFC 10070 assertions only ---------------------------


@pytest.fixture
def strict(server: FakeTokenServer) -> FakeTokenServer:
    server.strict_assertions = True
    return server


def test_from_issuer_private_key_jwt_meets_rfc10070(strict: FakeTokenServer, rsa_pem):
    """from_issuer() knows the issuer: its private_key_jwt assertions pass a strict server."""
    strict.add_client("pk-client", public_key_pem=rsa_pem[1])
    auth = ClientCredentialsAuth.from_issuer(strict.issuer, "pk-client", private_key=rsa_pem[0])
    with requests.Session() as session:
        assert session.get(strict.api_url(), auth=auth).status_code == 200
    assertion = _assertion_of(strict.token_request_log[-1].body)
    assert _part(assertion, 1)["aud"] == strict.issuer
    assert _part(assertion, 0)["typ"] == "client-authentication+jwt"


def test_client_secret_jwt_with_issuer_meets_rfc10070(strict: FakeTokenServer, make_auth):
    """issuer= given directly: the client_secret_jwt assertion's aud is the issuer."""
    auth = make_auth(auth_method="client_secret_jwt", issuer=strict.issuer)
    assert auth.get_token().access_token
    assert strict.token_requests == 1


def test_token_endpoint_audience_is_refused_by_a_strict_server(strict: FakeTokenServer, make_auth):
    """Without the issuer the endpoint is the audience: a strict server refuses it, by name."""
    auth = make_auth(auth_method="client_secret_jwt")
    with pytest.raises(CredentialsRejectedError, match="aud must be the issuer"):
        auth.get_token()


def test_retries_send_new_assertions(strict: FakeTokenServer, make_auth):
    """A retried token request carries a new jti (a replayed one would be refused)."""
    strict.fail(Failure.status(503), times=2)
    auth = make_auth(auth_method="client_secret_jwt", issuer=strict.issuer, max_attempts=3)
    assert auth.get_token().access_token
    jtis = {_part(_assertion_of(r.body), 1)["jti"] for r in strict.token_request_log}
    assert (strict.token_requests, len(jtis)) == (3, 3)


def test_a_copy_keeps_the_audience(strict: FakeTokenServer, make_auth):
    """The issuer travels with a pickled auth object."""
    import pickle  # noqa: PLC0415

    auth = pickle.loads(pickle.dumps(make_auth(auth_method="client_secret_jwt", issuer=strict.url)))
    assert auth.get_token().access_token
    assert _part(_assertion_of(strict.token_request_log[-1].body), 1)["aud"] == strict.issuer
    assert CLIENT_SECRET not in repr(auth)
    assert CLIENT_ID in repr(auth)
