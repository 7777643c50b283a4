"""ClientCredentialsAuth.from_issuer: OpenID Connect discovery over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chaveiro import (
    ClientCredentialsAuth,
    ClientTLS,
    DiscoveryError,
    InsecureURLError,
    IssuerUnreachableError,
    MissingSettingError,
    client_tls,
)
from chaveiro._discovery import ProviderMetadata, choose_auth_method
from chaveiro.testing import FakeTokenServer, self_signed_client_cert
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.providers.conftest import StaticIssuer


def discover(issuer: str, **options: object) -> ClientCredentialsAuth:
    return ClientCredentialsAuth.from_issuer(issuer, CLIENT_ID, CLIENT_SECRET, **options)  # type: ignore[arg-type]


def test_discovers_the_token_endpoint(server: FakeTokenServer):
    """The token endpoint comes from the discovery document, and tokens flow."""
    auth = discover(server.issuer)
    assert auth.token_url == server.oauth_token_url
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200
    assert server.token_requests == 1


def test_discovery_happens_once_per_issuer(server: FakeTokenServer):
    """Two from_issuer calls (trailing slash or not) make one discovery request."""
    first = discover(server.issuer)
    second = discover(server.issuer + "/")
    assert first.token_url == second.token_url == server.oauth_token_url
    assert server.discovery_requests == 1


def test_concurrent_discovery_is_single_flight(server: FakeTokenServer):
    """Sixteen threads discovering one issuer at once make one request."""
    barrier = threading.Barrier(16)
    urls: list[str] = []

    def worker() -> None:
        barrier.wait()
        urls.append(discover(server.issuer).token_url)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert urls == [server.oauth_token_url] * 16
    assert server.discovery_requests == 1


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        (["client_secret_post", "client_secret_basic"], "client_secret_basic"),
        (["private_key_jwt", "client_secret_post"], "client_secret_post"),
        (["client_secret_jwt", "private_key_jwt"], "client_secret_jwt"),
    ],
)
def test_method_follows_what_the_server_supports(
    server: FakeTokenServer, supported: list[str], expected: str
):
    """Basic, then post, then client_secret_jwt: the first the issuer lists is used on the wire."""
    server.auth_methods_supported = supported
    auth = discover(server.issuer)
    auth.get_token()
    [sent] = server.token_request_log
    if expected == "client_secret_basic":
        assert sent.headers["authorization"].startswith("Basic ")
        assert "client_secret" not in sent.fields
    elif expected == "client_secret_post":
        assert "authorization" not in sent.headers
        assert sent.fields["client_secret"] == CLIENT_SECRET
    else:
        assert "client_secret" not in sent.fields
        assert sent.fields["client_assertion_type"].endswith(":jwt-bearer")


def test_private_key_selects_private_key_jwt(server: FakeTokenServer):
    """With a private key, private_key_jwt is used when the issuer supports it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server.add_client("signer", "unused-secret", public_key_pem=public)
    auth = ClientCredentialsAuth.from_issuer(
        server.issuer, "signer", private_key=pem, signing_alg="ES256"
    )
    assert requests.get(server.api_url(), auth=auth, timeout=10).status_code == 200
    assert "client_assertion" in server.token_request_log[0].fields


def test_private_key_without_server_support_is_refused(server: FakeTokenServer):
    """A private key for an issuer that does not take private_key_jwt is a DiscoveryError."""
    server.auth_methods_supported = ["client_secret_basic"]
    with pytest.raises(DiscoveryError, match="private_key_jwt"):
        ClientCredentialsAuth.from_issuer(server.issuer, "id", private_key=b"unused")


def test_no_usable_method_is_explained(server: FakeTokenServer):
    """An issuer listing only methods chaveiro cannot use with a secret says so."""
    server.auth_methods_supported = ["tls_client_auth"]
    with pytest.raises(DiscoveryError, match="tls_client_auth"):
        discover(server.issuer)


def test_explicit_auth_method_wins(server: FakeTokenServer):
    """auth_method= overrides the discovered choice."""
    auth = discover(server.issuer, auth_method="client_secret_post")
    auth.get_token()
    assert server.token_request_log[0].fields["client_secret"] == CLIENT_SECRET


def test_absent_method_list_means_basic(server: FakeTokenServer, static_issuer: StaticIssuer):
    """A document without token_endpoint_auth_methods_supported gets client_secret_basic."""
    static_issuer.document(token_endpoint=server.oauth_token_url)
    discover(static_issuer.url).get_token()
    assert server.token_request_log[0].headers["authorization"].startswith("Basic ")
    metadata = ProviderMetadata("https://idp", "https://idp/token", None)
    assert choose_auth_method(metadata, private_key=False) == "client_secret_basic"


def test_discovery_goes_through_the_given_session(server: FakeTokenServer):
    """session= carries the discovery request, and then the token requests."""
    seen: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, **_: seen.append(r.url))
    auth = discover(server.issuer, session=session)
    auth.get_token()
    assert seen == [server.issuer + "/.well-known/openid-configuration", server.oauth_token_url]


def test_unreachable_issuer():
    """No answer at all: IssuerUnreachableError naming the issuer."""
    with pytest.raises(IssuerUnreachableError, match="Could not reach the issuer"):
        discover("http://127.0.0.1:9")


def test_missing_document_is_an_http_error(server: FakeTokenServer):
    """A 404 for the document names the status and asks to check the issuer."""
    with pytest.raises(DiscoveryError, match="HTTP 404") as caught:
        discover(server.issuer + "/realms/none")
    assert caught.value.status_code == 404


def test_non_json_document(static_issuer: StaticIssuer):
    """An HTML page instead of the document is a DiscoveryError."""
    static_issuer.content_type, static_issuer.body = "text/html", b"<html>Login</html>"
    with pytest.raises(DiscoveryError, match="not a JSON object"):
        discover(static_issuer.url)


def test_document_without_token_endpoint(static_issuer: StaticIssuer):
    """A document without token_endpoint is a DiscoveryError that suggests token_url=."""
    static_issuer.document(authorization_endpoint=static_issuer.url + "/auth")
    with pytest.raises(DiscoveryError, match="no token_endpoint"):
        discover(static_issuer.url)


def test_issuer_mismatch_is_refused(server: FakeTokenServer):
    """A document naming another issuer is not trusted."""
    other_name = server.issuer.replace("127.0.0.1", "localhost")
    with pytest.raises(DiscoveryError, match=r"names .* as its issuer"):
        discover(other_name)


def test_failures_are_not_remembered(static_issuer: StaticIssuer, server: FakeTokenServer):
    """After a failed discovery, the next call asks again."""
    static_issuer.status = 503
    with pytest.raises(DiscoveryError, match="HTTP 503"):
        discover(static_issuer.url)
    static_issuer.document(token_endpoint=server.oauth_token_url)
    assert discover(static_issuer.url).token_url == server.oauth_token_url
    assert static_issuer.hits == 2


def test_plain_http_issuer_is_refused():
    """An issuer must be HTTPS (or loopback), checked before any request."""
    with pytest.raises(InsecureURLError, match="issuer"):
        discover("http://idp.example.com")


def test_discovered_token_endpoint_must_be_https(static_issuer: StaticIssuer):
    """A discovered plain-HTTP token endpoint is refused like a configured one."""
    static_issuer.document(token_endpoint="http://idp.example.com/token")
    with pytest.raises(InsecureURLError, match="token_endpoint"):
        discover(static_issuer.url)


def test_missing_issuer_is_named():
    """An empty issuer is a MissingSettingError."""
    with pytest.raises(MissingSettingError, match="issuer") as caught:
        discover("")
    assert caught.value.names == ("issuer",)


# ---- CA bundles and client certificates: discovery goes as the token requests go ---------------


@pytest.fixture
def other_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """REQUESTS_CA_BUNDLE set to a CA that signed none of the servers here."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(path))
    return str(path)


def test_discovery_honours_the_sessions_verify_over_requests_ca_bundle(
    tls_server: FakeTokenServer, ca: trustme.CA, tmp_path: Path, other_ca_bundle: str
):
    """session.verify names the issuer's private CA; REQUESTS_CA_BUNDLE names another.

    The session wins for the discovery request as it does for the token requests.
    """
    ca_file = tmp_path / "issuer-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with requests.Session() as session:
        session.verify = str(ca_file)
        auth = discover(tls_server.issuer, session=session)
        assert auth.token_url == tls_server.oauth_token_url
        assert auth.get_token().access_token in tls_server.issued_tokens
    assert tls_server.discovery_requests == 1
    assert tls_server.token_requests == 1


def test_discovery_without_the_right_ca_is_unreachable(
    tls_server: FakeTokenServer, other_ca_bundle: str
):
    """The control: with only REQUESTS_CA_BUNDLE (another CA), the issuer does not verify."""
    with pytest.raises(IssuerUnreachableError, match=r"TLS verification failed.*session\.verify"):
        discover(tls_server.issuer)


@pytest.fixture
def mtls_server() -> Iterator[FakeTokenServer]:
    """HTTPS from a private CA, a client certificate required on every connection."""
    with FakeTokenServer(mtls=True) as srv:
        srv.add_client("pix", tls_client_auth_san_dns="pix.example")
        srv.add_client("app", CLIENT_SECRET)
        yield srv


@pytest.fixture
def pix_tls(mtls_server: FakeTokenServer) -> ClientTLS:
    cert = mtls_server.issue_client_cert("pix.example")
    return client_tls(cert.to_pkcs12("pw"), "pw", verify=mtls_server.ca_file)


def test_a_certificate_alone_discovers_and_chooses_tls_client_auth(
    mtls_server: FakeTokenServer, pix_tls: ClientTLS, other_ca_bundle: str
):
    """client_cert= and no secret, at an issuer behind mTLS and a private CA.

    Discovery presents the certificate and trusts client_tls(verify=...)'s CA (not
    REQUESTS_CA_BUNDLE); the issuer lists tls_client_auth, so the token request sends the
    client id and no secret, and is bound to the certificate.
    """
    auth = ClientCredentialsAuth.from_issuer(mtls_server.issuer, "pix", client_cert=pix_tls)
    token = auth.get_token()
    assert token.access_token in mtls_server.issued_tokens
    [sent] = mtls_server.token_request_log
    assert sent.fields == {"grant_type": "client_credentials", "client_id": "pix"}
    assert "authorization" not in sent.headers
    assert sent.client_cert_thumbprint == pix_tls.thumbprint
    assert mtls_server.discovery_requests == 1


def test_a_certificate_as_files_with_its_password(
    mtls_server: FakeTokenServer, tmp_path: Path, other_ca_bundle: str, monkeypatch
):
    """client_cert= a .p12 path and client_cert_password=, as from_env() passes them."""
    p12 = tmp_path / "pix.p12"
    p12.write_bytes(mtls_server.issue_client_cert("pix.example").to_pkcs12("pw"))
    # certifi's bundle does not know the private CA: point the certificate's context at it
    monkeypatch.setattr("chaveiro._certs._default_cafile", lambda: mtls_server.ca_file)
    auth = ClientCredentialsAuth.from_issuer(
        mtls_server.issuer, "pix", client_cert=str(p12), client_cert_password="pw"
    )
    assert auth.get_token().access_token in mtls_server.issued_tokens
    assert auth.tls is not None


def test_a_self_signed_certificate_chooses_self_signed_tls_client_auth(
    mtls_server: FakeTokenServer,
):
    """A self-signed certificate alone: self_signed_tls_client_auth (RFC 8705 §2.2)."""
    mine = self_signed_client_cert("selfie")
    mtls_server.add_client("selfie", self_signed_cert=mine.cert_pem)
    tls = client_tls(mine.to_pkcs12("pw"), "pw", verify=mtls_server.ca_file)
    auth = ClientCredentialsAuth.from_issuer(mtls_server.issuer, "selfie", client_cert=tls)
    assert auth.get_token().access_token in mtls_server.issued_tokens
    assert mtls_server.token_request_log[0].fields["client_id"] == "selfie"
    assert auth._settings.auth_method == "self_signed_tls_client_auth"


def test_a_certificate_with_a_secret_keeps_a_secret_method(
    mtls_server: FakeTokenServer, pix_tls: ClientTLS
):
    """With a secret too, the secret authenticates (client_secret_basic), over mTLS."""
    auth = ClientCredentialsAuth.from_issuer(
        mtls_server.issuer, "app", CLIENT_SECRET, client_cert=pix_tls
    )
    auth.get_token()
    assert mtls_server.token_request_log[0].headers["authorization"].startswith("Basic ")


def test_a_certificate_alone_at_an_issuer_without_certificate_methods(
    mtls_server: FakeTokenServer, pix_tls: ClientTLS
):
    """No certificate method listed: a DiscoveryError that says what to pass."""
    mtls_server.auth_methods_supported = ["client_secret_basic", "private_key_jwt"]
    with pytest.raises(DiscoveryError, match="tls_client_auth") as caught:
        ClientCredentialsAuth.from_issuer(mtls_server.issuer, "pix", client_cert=pix_tls)
    assert "client secret" in str(caught.value)
    assert "auth_method=" in str(caught.value)


def test_the_mtls_alias_of_the_token_endpoint_is_used_with_a_certificate(
    static_issuer: StaticIssuer, mtls_server: FakeTokenServer, pix_tls: ClientTLS
):
    """RFC 8705 §5: with a certificate, the mTLS alias of the token endpoint; else the endpoint."""
    static_issuer.document(
        token_endpoint=static_issuer.url + "/token",
        token_endpoint_auth_methods_supported=["client_secret_basic", "tls_client_auth"],
        mtls_endpoint_aliases={"token_endpoint": mtls_server.oauth_token_url},
    )
    with_cert = ClientCredentialsAuth.from_issuer(static_issuer.url, "pix", client_cert=pix_tls)
    assert with_cert.token_url == mtls_server.oauth_token_url
    assert with_cert.get_token().access_token in mtls_server.issued_tokens
    plain = discover(static_issuer.url)
    assert plain.token_url == static_issuer.url + "/token"
    assert static_issuer.hits == 1


@pytest.mark.parametrize(
    ("listed", "kind", "expected"),
    [
        (["client_secret_basic", "tls_client_auth"], "issued", "tls_client_auth"),
        (
            ["self_signed_tls_client_auth", "tls_client_auth"],
            "issued",
            "tls_client_auth",
        ),
        (["self_signed_tls_client_auth"], "issued", "self_signed_tls_client_auth"),
        (
            ["tls_client_auth", "self_signed_tls_client_auth"],
            "self-signed",
            "self_signed_tls_client_auth",
        ),
    ],
)
def test_certificate_methods_in_order(listed: list[str], kind: str, expected: str):
    """A CA-issued certificate prefers tls_client_auth; a self-signed one can only be that."""
    metadata = ProviderMetadata("https://idp", "https://idp/token", tuple(listed))
    assert choose_auth_method(metadata, private_key=False, certificate=kind) == expected  # type: ignore[arg-type]
    if kind == "self-signed":
        only_pki = ProviderMetadata("https://idp", "https://idp/token", ("tls_client_auth",))
        with pytest.raises(DiscoveryError, match="self_signed_tls_client_auth"):
            choose_auth_method(only_pki, private_key=False, certificate=kind)  # type: ignore[arg-type]
