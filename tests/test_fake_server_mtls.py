"""FakeTokenServer(mtls=True): client certificates required, tls_client_auth, bound tokens."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from chaveiro.testing import (
    ClientCertificate,
    FakeTokenServer,
    self_signed_client_cert,
)

CC = {"grant_type": "client_credentials"}


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(mtls=True) as srv:
        yield srv


def context(server: FakeTokenServer, cert: ClientCertificate | None, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=server.ca_file)
    if cert is not None:
        path = tmp / f"{cert.thumbprint[:12]}.pem"
        path.write_bytes(cert.combined_pem)
        ctx.load_cert_chain(path)
    return ctx


def client(server: FakeTokenServer, cert: ClientCertificate | None, tmp: Path) -> httpx.Client:
    return httpx.Client(verify=context(server, cert, tmp), timeout=10)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return claims


def handshake_failures(server: FakeTokenServer) -> int:
    """The count, once the server's thread has recorded it (it may lag the client's error)."""
    for _ in range(200):
        if server.handshake_failures:
            break
        time.sleep(0.01)
    return server.handshake_failures


def token_for(http: httpx.Client, server: FakeTokenServer, client_id: str) -> str:
    resp = http.post(server.oauth_token_url, data={**CC, "client_id": client_id})
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]
    return token


def test_a_connection_without_a_client_certificate_is_refused(server, tmp_path):
    """The handshake fails without a certificate: nothing reaches the token endpoint."""
    with client(server, None, tmp_path) as http, pytest.raises(httpx.TransportError):
        http.post(server.oauth_token_url, data=CC)
    assert server.token_requests == 0
    assert handshake_failures(server) == 1


def test_a_certificate_from_another_ca_is_refused(server, tmp_path):
    """A certificate the server's CA did not issue (and not registered) fails the handshake."""
    stranger = self_signed_client_cert("stranger")
    with client(server, stranger, tmp_path) as http, pytest.raises(httpx.TransportError):
        http.post(server.oauth_token_url, data={**CC, "client_id": "x"})
    assert (server.token_requests, handshake_failures(server)) == (0, 1)


def test_an_expired_certificate_is_refused(server, tmp_path):
    """An expired client certificate fails the handshake."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    old = server.issue_client_cert(
        not_before=past - dt.timedelta(days=30), not_after=past, common_name="old"
    )
    with client(server, old, tmp_path) as http, pytest.raises(httpx.TransportError):
        http.post(server.oauth_token_url, data=CC)
    assert server.token_requests == 0


def test_tls_client_auth_by_subject_dn_and_bound_token(server, tmp_path):
    """The subject DN authenticates the client; the token carries cnf x5t#S256 of its cert."""
    cert = server.issue_client_cert(common_name="Minha Empresa", organization_name="ACME Ltda")
    server.add_client("pix", tls_client_auth_subject_dn=cert.subject_dn)
    with client(server, cert, tmp_path) as http:
        token = token_for(http, server, "pix")
        assert claims_of(token)["cnf"] == {"x5t#S256": cert.thumbprint}
        resp = http.get(server.api_url(), headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        assert resp.json()["client_id"] == "pix"
    assert server.token_request_log[-1].client_cert_thumbprint == cert.thumbprint
    assert "CN=Minha Empresa" in cert.subject_dn
    assert "O=ACME Ltda" in cert.subject_dn


def test_a_bound_token_is_refused_with_another_certificate(server, tmp_path):
    """RFC 8705 §3: the API answers 401 when the token's certificate is not the presented one."""
    first = server.issue_client_cert("one.example")
    second = server.issue_client_cert("two.example")
    server.add_client("pix", tls_client_auth_san_dns="one.example")
    with client(server, first, tmp_path) as http:
        token = token_for(http, server, "pix")
    with client(server, second, tmp_path) as other:
        resp = other.get(server.api_url(), headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert "another client certificate" in resp.json()["error_description"]
    assert "invalid_token" in resp.headers["WWW-Authenticate"]
    assert server.api_unauthorized == 1


def test_the_wrong_certificate_cannot_authenticate_a_client(server, tmp_path):
    """A trusted certificate that does not carry the registered name is invalid_client."""
    registered = server.issue_client_cert("pix.example")
    other = server.issue_client_cert("other.example")
    server.add_client("pix", tls_client_auth_san_dns="pix.example")
    assert registered.thumbprint != other.thumbprint
    with client(server, other, tmp_path) as http:
        resp = http.post(server.oauth_token_url, data={**CC, "client_id": "pix"})
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")
    assert "does not match" in resp.json()["error_description"]


@pytest.mark.parametrize(
    ("identity", "registered"),
    [
        ("api.example.com", {"tls_client_auth_san_dns": "API.example.com"}),
        ("10.1.2.3", {"tls_client_auth_san_ip": "10.1.2.3"}),
        ("pix@example.com", {"tls_client_auth_san_email": "pix@example.com"}),
    ],
)
def test_tls_client_auth_by_subject_alternative_name(server, tmp_path, identity, registered):
    """One SAN, of any type, identifies the client (RFC 8705 §2.1.2)."""
    cert = server.issue_client_cert(identity)
    server.add_client("pix", **registered)
    with client(server, cert, tmp_path) as http:
        token_for(http, server, "pix")


def test_self_signed_tls_client_auth(server, tmp_path):
    """A registered self-signed certificate is accepted and matched by its thumbprint."""
    mine = self_signed_client_cert("mine")
    server.add_client("self", self_signed_cert=mine.cert_pem)
    with client(server, mine, tmp_path) as http:
        token = token_for(http, server, "self")
        assert claims_of(token)["cnf"]["x5t#S256"] == mine.thumbprint


def test_a_secret_client_over_mtls_gets_a_bound_token(server, tmp_path):
    """Secret methods keep working over mTLS, and their tokens are bound too."""
    cert = server.issue_client_cert("app.example")
    server.add_client("app", "app-secret")
    with client(server, cert, tmp_path) as http:
        data = {**CC, "client_id": "app", "client_secret": "app-secret"}
        token = http.post(server.oauth_token_url, data=data).json()["access_token"]
    assert claims_of(token)["cnf"] == {"x5t#S256": cert.thumbprint}
    server.bind_tokens = False
    with client(server, cert, tmp_path) as http:
        token = http.post(server.oauth_token_url, data=data).json()["access_token"]
    assert "cnf" not in claims_of(token)


def test_a_secret_client_cannot_use_a_certificate_instead(server, tmp_path):
    """A client registered without a certificate rule cannot authenticate by certificate."""
    cert = server.issue_client_cert("app.example")
    server.add_client("app", "app-secret")
    with client(server, cert, tmp_path) as http:
        resp = http.post(server.oauth_token_url, data={**CC, "client_id": "app"})
    assert resp.status_code == 401


def test_tls_methods_can_be_disabled_and_are_advertised(server, tmp_path):
    """Discovery lists the certificate methods and bound tokens; a disabled method is refused."""
    cert = server.issue_client_cert("pix.example")
    server.add_client("pix", tls_client_auth_san_dns="pix.example")
    with client(server, cert, tmp_path) as http:
        document = http.get(server.issuer + "/.well-known/openid-configuration").json()
        assert "tls_client_auth" in document["token_endpoint_auth_methods_supported"]
        assert "self_signed_tls_client_auth" in document["token_endpoint_auth_methods_supported"]
        assert document["tls_client_certificate_bound_access_tokens"] is True
        server.auth_methods_supported = ["client_secret_basic"]
        resp = http.post(server.oauth_token_url, data={**CC, "client_id": "pix"})
    assert resp.status_code == 401
    assert "tls_client_auth is not enabled" in resp.json()["error_description"]


def test_grant_type_in_the_query_string(server, tmp_path):
    """As Santander sends it: grant_type in the URL, client_id and secret in the form."""
    cert = server.issue_client_cert("app.example")
    server.add_client("app", "app-secret")
    form = {"client_id": "app", "client_secret": "app-secret"}
    with client(server, cert, tmp_path) as http:
        url = server.oauth_token_url + "?grant_type=client_credentials"
        assert http.post(url, data=form).status_code == 200
        clash = server.oauth_token_url + "?grant_type=password"
        resp = http.post(clash, data={**form, **CC})
        assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")


def test_basic_with_a_json_body(server, tmp_path):
    """As Efí sends it: HTTP Basic and {"grant_type": "client_credentials"} as JSON."""
    cert = server.issue_client_cert("app.example")
    server.add_client("app", "app-secret")
    basic = base64.b64encode(b"app:app-secret").decode()
    with client(server, cert, tmp_path) as http:
        resp = http.post(
            server.oauth_token_url, json=CC, headers={"Authorization": f"Basic {basic}"}
        )
    assert resp.status_code == 200, resp.text


def test_pkcs12_export_round_trips(server):
    """to_pkcs12() writes what a bank hands out: key and certificate under a password."""
    cert = server.issue_client_cert("app.example")
    blob = cert.to_pkcs12("senha")
    key, leaf, _ = pkcs12.load_key_and_certificates(blob, b"senha")
    assert key is not None
    assert leaf is not None
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"errada")
    assert "key_pem" not in repr(cert)


def test_registration_is_checked():
    """Bad registrations fail at add_client, not at the first request."""
    with FakeTokenServer() as plain:
        with pytest.raises(ValueError, match="mtls=True"):
            plain.add_client("x", self_signed_cert=self_signed_client_cert().cert_pem)
        with pytest.raises(ValueError, match="secret, a public key or a certificate"):
            plain.add_client("x")
        with pytest.raises(ValueError, match="one of"):
            plain.add_client("x", tls_client_auth_san_dns="a", tls_client_auth_san_uri="b")
        with pytest.raises(RuntimeError, match="mtls=True"):
            plain.issue_client_cert("a")
    with pytest.raises(ValueError, match="one or the other"):
        FakeTokenServer(mtls=True, ssl_context=ssl.create_default_context())


def test_ca_file_is_removed_on_stop():
    """The CA file lives as long as the server."""
    with FakeTokenServer(mtls=True) as srv:
        path = Path(srv.ca_file)
        assert path.read_bytes() == srv.ca_pem
    assert not path.exists()
