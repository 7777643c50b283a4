"""ClientCredentialsAuth over mutual TLS: servers on 127.0.0.1 that require client certificates."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

import chaveiro
from chaveiro import (
    ClientCertificateError,
    ClientCredentialsAuth,
    ConfigurationError,
    FileCache,
    MissingSettingError,
    TokenEndpointUnreachableError,
)
from chaveiro.testing import ClientCertificate, FakeTokenServer, self_signed_client_cert

PASSWORD = "senha-do-pfx-9876"
SECRET = "pix-secret-never-shown-0123456789"


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(mtls=True) as srv:
        srv.add_client("pix", tls_client_auth_san_dns="pix.example")
        srv.add_client("app", SECRET)
        yield srv


@pytest.fixture
def cert(server: FakeTokenServer) -> ClientCertificate:
    return server.issue_client_cert("pix.example", common_name="Empresa Pix")


@pytest.fixture
def p12(cert: ClientCertificate, tmp_path: Path) -> Path:
    path = tmp_path / "empresa.p12"
    path.write_bytes(cert.to_pkcs12(PASSWORD))
    return path


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return claims


def pix_auth(server: FakeTokenServer, source: object, **kwargs: Any) -> ClientCredentialsAuth:
    password = kwargs.pop("password", PASSWORD)
    tls = chaveiro.client_tls(source, password, verify=server.ca_file)  # type: ignore[arg-type]
    options: dict[str, Any] = {"auth_method": "tls_client_auth", "client_cert": tls}
    options.update(kwargs)
    client_id = options.pop("client_id", "pix")
    return ClientCredentialsAuth(server.oauth_token_url, client_id, **options)


def test_requests_without_a_session(server, cert, p12):
    """tls_client_auth with a PKCS#12: chaveiro's own session presents it; the API call too."""
    auth = pix_auth(server, p12)
    assert auth.tls is not None
    with requests.Session() as session:
        session.auth, session.cert = auth, auth.tls.requests_cert
        resp = session.get(server.api_url(), verify=auth.tls.verify, timeout=10)
    assert resp.status_code == 200, resp.text
    request = server.token_request_log[-1]
    assert request.client_cert_thumbprint == cert.thumbprint
    assert request.fields == {"grant_type": "client_credentials", "client_id": "pix"}
    assert "authorization" not in request.headers
    auth.tls.close()


def test_get_token_is_bound_to_the_certificate(server, cert, tmp_path):
    """get_token() with a (.crt, .key) pair: the token's cnf names the certificate."""
    (tmp_path / "c.crt").write_bytes(cert.cert_pem)
    (tmp_path / "c.key").write_bytes(cert.key_pem)
    auth = pix_auth(server, (tmp_path / "c.crt", tmp_path / "c.key"), password=None)
    token = auth.get_token()
    assert claims_of(token.access_token)["cnf"] == {"x5t#S256": cert.thumbprint}
    assert auth.get_token() == token
    assert server.token_requests == 1


def test_httpx_sync_through_the_users_client(server, p12):
    """The httpx token request goes through the user's client, which carries the certificate."""
    auth = pix_auth(server, p12)
    assert auth.tls is not None
    with httpx.Client(auth=auth, verify=auth.tls.ssl_context, timeout=10) as client:
        assert client.get(server.api_url()).status_code == 200
        assert client.get(server.api_url()).status_code == 200
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_httpx_async_and_aget_token(server, cert, p12):
    """aget_token() without client= presents the certificate; so does an AsyncClient."""
    auth = pix_auth(server, p12)
    token = await auth.aget_token()
    assert claims_of(token.access_token)["cnf"]["x5t#S256"] == cert.thumbprint
    assert auth.tls is not None
    async with httpx.AsyncClient(auth=auth, verify=auth.tls.ssl_context, timeout=10) as client:
        assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 1


def test_two_certificates_for_one_client_id_never_cross(server, tmp_path):
    """Two certificates, one client id: two tokens, each used only with its own certificate."""
    first = server.issue_client_cert("pix.example", common_name="filial 1")
    second = server.issue_client_cert("pix.example", common_name="filial 2")
    cache = FileCache(tmp_path / "cache")
    auths = [pix_auth(server, c.to_pkcs12(PASSWORD), cache=cache) for c in (first, second)]
    tokens = [auth.get_token() for auth in auths]
    assert tokens[0].access_token != tokens[1].access_token
    assert server.token_requests == 2
    assert [auth.get_token() for auth in auths] == tokens  # each keeps its own
    assert server.token_requests == 2
    for auth, cert in zip(auths, (first, second), strict=True):
        assert claims_of(auth.get_token().access_token)["cnf"]["x5t#S256"] == cert.thumbprint
        assert auth.tls is not None
        with httpx.Client(auth=auth, verify=auth.tls.ssl_context, timeout=10) as client:
            assert client.get(server.api_url()).status_code == 200
    # a third object with the first certificate shares the first token, through the file cache
    chaveiro.testing.reset()
    again = pix_auth(server, first.to_pkcs12(PASSWORD), cache=cache)
    assert again.get_token() == tokens[0]
    assert server.token_requests == 2
    # and the server refuses a token presented with the other certificate
    assert auths[1].tls is not None
    with httpx.Client(verify=auths[1].tls.ssl_context, timeout=10) as other:
        resp = other.get(server.api_url(), headers={"Authorization": tokens[0].authorization})
    assert resp.status_code == 401


def test_secret_methods_over_mtls_with_bank_shapes(server, cert, p12):
    """Efí (Basic + JSON body) and Santander (grant_type in the query) over mTLS."""
    for options in (
        {"auth_method": "client_secret_basic", "body_format": "json"},
        {"auth_method": "client_secret_post", "grant_type_in": "query"},
    ):
        chaveiro.testing.reset()  # same identity: the second would reuse the first token
        auth = pix_auth(server, p12, client_id="app", client_secret=SECRET, **options)
        assert claims_of(auth.get_token().access_token)["cnf"]["x5t#S256"] == cert.thumbprint
    first, second = server.token_request_log
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.body) == {"grant_type": "client_credentials"}
    assert (second.query, second.fields) == (
        "grant_type=client_credentials",
        {"client_id": "app", "client_secret": SECRET},
    )


# --- errors ---------------------------------------------------------------------------------------


def test_no_client_certificate_names_client_cert(server, monkeypatch):
    """Without a certificate the handshake is refused; the error names client_cert=."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    auth = ClientCredentialsAuth(server.oauth_token_url, "app", SECRET, max_attempts=1)
    with pytest.raises(TokenEndpointUnreachableError) as info:
        auth.get_token()
    assert "client_cert=" in str(info.value)
    assert SECRET not in str(info.value)
    chaveiro.testing.reset()
    verify_only = ssl.create_default_context(cafile=server.ca_file)
    with (
        httpx.Client(auth=auth, verify=verify_only, timeout=10) as client,
        pytest.raises(TokenEndpointUnreachableError) as info,
    ):
        client.get(server.api_url())
    message = str(info.value)
    assert "requires a client certificate and none was presented" in message
    assert "TLSV13_ALERT_CERTIFICATE_REQUIRED" in message  # never redacted
    assert "client_cert=" in message
    assert not info.value.retryable
    assert server.token_requests == 0


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_a_refused_certificate_names_client_cert(server, library):
    """A certificate the server does not trust: the alert is named, and client_cert= too."""
    stranger = chaveiro.client_tls(
        self_signed_client_cert("stranger").to_pkcs12(), verify=server.ca_file
    )
    auth = ClientCredentialsAuth(
        server.oauth_token_url, "app", SECRET, client_cert=stranger, max_attempts=1
    )
    with (
        httpx.Client(auth=auth, verify=stranger.ssl_context, timeout=10) as client,
        pytest.raises(TokenEndpointUnreachableError) as info,
    ):
        auth.get_token() if library == "requests" else client.get(server.api_url())
    message = str(info.value)
    assert "TLSV1_ALERT_UNKNOWN_CA" in message
    assert "does not trust the issuer of the client certificate" in message
    assert "client_cert=" in message
    assert not info.value.retryable


def test_an_expired_certificate_is_refused_at_construction(server):
    """chaveiro refuses an expired certificate before any request, with the date."""
    now = dt.datetime.now(dt.timezone.utc)
    old = server.issue_client_cert(
        "pix.example", not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=2)
    )
    with pytest.raises(ClientCertificateError, match="expired on"):
        ClientCredentialsAuth(
            server.oauth_token_url,
            "pix",
            auth_method="tls_client_auth",
            client_cert=old.to_pkcs12(PASSWORD),
            client_cert_password=PASSWORD,
        )
    assert server.token_requests == 0


def test_configuration_mistakes(server, p12):
    """Each mistake is a ConfigurationError that says what to do."""
    url = server.oauth_token_url
    with pytest.raises(MissingSettingError, match="needs client_cert=") as info:
        ClientCredentialsAuth(url, "pix", auth_method="tls_client_auth")
    assert info.value.names == ("client_cert",)
    with pytest.raises(ConfigurationError, match="sends no secret"):
        ClientCredentialsAuth(
            url,
            "pix",
            SECRET,
            auth_method="tls_client_auth",
            client_cert=p12,
            client_cert_password=PASSWORD,
        )
    with pytest.raises(ConfigurationError, match="without client_cert="):
        ClientCredentialsAuth(url, "app", SECRET, client_cert_password=PASSWORD)
    tls = chaveiro.client_tls(p12, PASSWORD)
    with pytest.raises(ConfigurationError, match="drop client_cert_password"):
        ClientCredentialsAuth(url, "app", SECRET, client_cert=tls, client_cert_password=PASSWORD)
    with pytest.raises(ClientCertificateError, match="it is wrong"):
        ClientCredentialsAuth(url, "app", SECRET, client_cert=p12, client_cert_password="errada")


def test_from_env_reads_the_certificate(server, cert, p12):
    """OAUTH_CLIENT_CERT and OAUTH_CLIENT_CERT_PASSWORD; no secret needed for tls_client_auth."""
    environ = {
        "OAUTH_TOKEN_URL": server.oauth_token_url,
        "OAUTH_CLIENT_ID": "pix",
        "OAUTH_CLIENT_CERT": str(p12),
        "OAUTH_CLIENT_CERT_PASSWORD": PASSWORD,
    }
    auth = ClientCredentialsAuth.from_env(environ=environ, auth_method="tls_client_auth")
    assert auth.tls is not None
    assert auth.tls.thumbprint == cert.thumbprint
    with pytest.raises(MissingSettingError, match="OAUTH_CLIENT_SECRET"):
        ClientCredentialsAuth.from_env(environ={k: environ[k] for k in list(environ)[:2]})


def test_no_password_or_token_in_reprs_errors_or_logs(server, p12, caplog):
    """The certificate password and the token appear nowhere."""
    caplog.set_level(logging.DEBUG, logger="chaveiro")
    auth = pix_auth(server, p12)
    token = auth.get_token()
    texts = [repr(auth), str(auth), repr(auth.tls), repr(token), caplog.text]
    for text in texts:
        assert PASSWORD not in text
        assert token.access_token not in text


def test_the_laptop_recipe_in_docs_pix(tmp_path):
    """docs/pt-BR/pix.md's laptop example, as written there."""
    with FakeTokenServer(mtls=True) as banco:
        cert = banco.issue_client_cert("empresa.example", common_name="Minha Empresa")
        banco.add_client("pix-app", tls_client_auth_subject_dn=cert.subject_dn)
        (tmp_path / "empresa.p12").write_bytes(cert.to_pkcs12("senha"))

        tls = chaveiro.client_tls(tmp_path / "empresa.p12", "senha", verify=banco.ca_file)
        auth = ClientCredentialsAuth(
            banco.oauth_token_url, "pix-app", auth_method="tls_client_auth", client_cert=tls
        )
        with httpx.Client(auth=auth, verify=tls.ssl_context) as api:
            assert api.get(banco.api_url("/api/cob")).status_code == 200
        assert banco.token_request_log[-1].client_cert_thumbprint == cert.thumbprint
    assert (
        'chaveiro.client_tls(tmp_path / "empresa.p12"'
        in (Path(__file__).parent.parent / "docs" / "pt-BR" / "pix.md").read_text()
    )
