"""chaveiro.client_tls: PEM pairs, one PEM, PKCS#12; checks; contexts for every HTTP library."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from chaveiro import ClientCertificateError, ClientTLS, ConfigurationError, client_tls
from chaveiro._certs import _pem_bundle
from chaveiro.testing import ClientCertificate, FakeTokenServer, self_signed_client_cert

PASSWORD = "senha-do-certificado-0123"
CC = {"grant_type": "client_credentials"}


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(mtls=True) as srv:
        yield srv


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where chaveiro's own temporary files go during the test."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


@pytest.fixture
def cert(server: FakeTokenServer) -> ClientCertificate:
    issued = server.issue_client_cert("pix.example", common_name="Empresa Pix")
    server.add_client("pix", tls_client_auth_san_dns="pix.example")
    return issued


def files(cert: ClientCertificate, tmp_path: Path) -> dict[str, object]:
    """The same certificate in every form client_cert= takes."""
    (tmp_path / "c.crt").write_bytes(cert.cert_pem)
    (tmp_path / "c.key").write_bytes(cert.key_pem)
    (tmp_path / "both.pem").write_bytes(cert.combined_pem)
    (tmp_path / "c.p12").write_bytes(cert.to_pkcs12(PASSWORD))
    return {
        "pair": (str(tmp_path / "c.crt"), tmp_path / "c.key"),
        "combined": str(tmp_path / "both.pem"),
        "pkcs12 path": tmp_path / "c.p12",
        "pkcs12 bytes": cert.to_pkcs12(PASSWORD),
    }


def key_copies(where: Path) -> list[Path]:
    return list(where.glob("chaveiro-cert-*"))


def load(source: object, server: FakeTokenServer) -> ClientTLS:
    password = PASSWORD if "p12" in str(source) or isinstance(source, bytes) else None
    return client_tls(source, password, verify=server.ca_file)  # type: ignore[arg-type]


@pytest.mark.parametrize("form", ["pair", "combined", "pkcs12 path", "pkcs12 bytes"])
def test_every_form_gives_the_same_certificate(server, cert, tmp_path, form):
    """Thumbprint and subject are the certificate's, whatever file it came in."""
    tls = load(files(cert, tmp_path)[form], server)
    assert tls.thumbprint == cert.thumbprint
    assert tls.subject == cert.subject_dn
    assert tls.not_after > dt.datetime.now(dt.timezone.utc)
    assert tls.verify == server.ca_file


@pytest.mark.parametrize("form", ["pair", "combined", "pkcs12 path", "pkcs12 bytes"])
def test_ssl_context_authenticates_with_httpx(server, cert, tmp_path, form, private_tmp):
    """The context presents the certificate: tls_client_auth gets a token bound to it."""
    tls = load(files(cert, tmp_path)[form], server)
    with httpx.Client(verify=tls.ssl_context, timeout=10) as http:
        resp = http.post(server.oauth_token_url, data={**CC, "client_id": "pix"})
        assert resp.status_code == 200, resp.text
        auth = {"Authorization": "Bearer " + resp.json()["access_token"]}
        assert http.get(server.api_url(), headers=auth).status_code == 200
    assert server.token_request_log[-1].client_cert_thumbprint == cert.thumbprint
    assert key_copies(private_tmp) == []  # the key copy is gone once loaded


@pytest.mark.anyio
async def test_ssl_context_with_httpx_async(server, cert, tmp_path):
    """The same context serves an AsyncClient."""
    tls = load(files(cert, tmp_path)["pkcs12 bytes"], server)
    async with httpx.AsyncClient(verify=tls.ssl_context, timeout=10) as http:
        resp = await http.post(server.oauth_token_url, data={**CC, "client_id": "pix"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("form", ["pair", "combined"])
def test_requests_cert_is_the_users_own_pem_files(server, cert, tmp_path, form, private_tmp):
    """Unencrypted PEM files are handed to requests as they are: no copy."""
    source = files(cert, tmp_path)[form]
    tls = load(source, server)
    expected = source if isinstance(source, str) else tuple(str(p) for p in source)  # type: ignore[attr-defined]
    assert tls.requests_cert == expected
    assert key_copies(private_tmp) == []


def test_requests_cert_of_a_pkcs12_is_private_and_removed(server, cert, tmp_path, private_tmp):
    """A PKCS#12 key reaches requests as a 0600 file in a 0700 directory, removed on close."""
    tls = load(files(cert, tmp_path)["pkcs12 path"], server)
    path = Path(str(tls.requests_cert))
    assert tls.requests_cert == str(path)  # written once
    assert path.parent.parent == private_tmp
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with requests.Session() as session:
        session.cert = tls.requests_cert
        # verify= per request: REQUESTS_CA_BUNDLE would win over session.verify
        data = {**CC, "client_id": "pix"}
        resp = session.post(server.oauth_token_url, data=data, verify=tls.verify, timeout=10)
    assert resp.status_code == 200, resp.text
    tls.close()
    assert not path.parent.exists()
    tls.close()  # twice is fine


def test_the_temporary_key_for_ssl_is_encrypted(cert):
    """The copy ssl loads the key from is encrypted with a one-time passphrase."""
    loaded = client_tls(cert.to_pkcs12(PASSWORD), PASSWORD)._loaded
    assert b"ENCRYPTED PRIVATE KEY" in _pem_bundle(loaded, b"one-time")
    assert b"ENCRYPTED" not in _pem_bundle(loaded, None)


def test_an_encrypted_pem_key_is_opened_with_the_password(server, cert, tmp_path):
    """client_cert_password opens an encrypted PEM key as well as a PKCS#12."""
    key = serialization.load_pem_private_key(cert.key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    (tmp_path / "c.crt").write_bytes(cert.cert_pem)
    (tmp_path / "enc.key").write_bytes(encrypted)
    pair = (tmp_path / "c.crt", tmp_path / "enc.key")
    with pytest.raises(ClientCertificateError, match="client_cert_password="):
        client_tls(pair)
    tls = client_tls(pair, PASSWORD.encode(), verify=server.ca_file)
    assert tls.thumbprint == cert.thumbprint
    with httpx.Client(verify=tls.ssl_context, timeout=10) as http:
        assert http.post(server.oauth_token_url, data={**CC, "client_id": "pix"}).is_success
    assert tls.requests_cert != (str(pair[0]), str(pair[1]))  # requests needs a clear copy
    tls.close()


def test_pickles_as_its_inputs(server, cert, tmp_path):
    """A pickled ClientTLS loads the certificate again; the copy works."""
    tls = load(files(cert, tmp_path)["pkcs12 bytes"], server)
    copy = pickle.loads(pickle.dumps(tls))
    assert (copy.thumbprint, copy.verify) == (tls.thumbprint, tls.verify)
    with httpx.Client(verify=copy.ssl_context, timeout=10) as http:
        assert http.post(server.oauth_token_url, data={**CC, "client_id": "pix"}).is_success


def test_repr_shows_no_secret(cert):
    """repr names the certificate, never the password or the key."""
    tls = client_tls(cert.to_pkcs12(PASSWORD), PASSWORD)
    text = repr(tls)
    assert tls.thumbprint in text
    assert PASSWORD not in text
    assert "PRIVATE" not in text


# --- bad input ----------------------------------------------------------------------------------


def _raises(match: str, *args: object, **kwargs: object) -> ClientCertificateError:
    with pytest.raises(ClientCertificateError, match=match) as info:
        client_tls(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)
    assert PASSWORD not in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    """A path that does not exist is named, with the working directory."""
    _raises("was not found", str(tmp_path / "nope.p12"))
    _raises("was not found", (tmp_path / "nope.crt", tmp_path / "nope.key"))
    _raises("is a directory", tmp_path)


def test_wrong_or_missing_pkcs12_password(cert):
    """A wrong password, or none for an encrypted PKCS#12, says so."""
    blob = cert.to_pkcs12(PASSWORD)
    _raises("it is wrong", blob, "errada")
    _raises("pass its password as client_cert_password=", blob)


def test_not_a_certificate(tmp_path):
    """Random bytes, or a PEM without a certificate or a key, are explained."""
    junk = tmp_path / "junk.p12"
    junk.write_bytes(os.urandom(64))
    _raises("could not be opened as PKCS#12", junk, PASSWORD)
    text = tmp_path / "notes.pem"
    text.write_bytes(b"-----BEGIN NOTHING-----\nabc\n-----END NOTHING-----\n")
    _raises("no readable PEM certificate", text)


def test_pem_without_a_key_or_with_someone_elses(cert, tmp_path):
    """A certificate alone, or with a key that is not its own, is refused."""
    only = tmp_path / "only.crt"
    only.write_bytes(cert.cert_pem)
    _raises("holds no private key", only)
    other = self_signed_client_cert("other")
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(other.key_pem + cert.cert_pem)
    _raises("does not belong to its certificate", mixed)
    plain = tmp_path / "plain.pem"
    plain.write_bytes(cert.combined_pem)
    _raises("not encrypted: drop client_cert_password", plain, PASSWORD)


def test_expired_and_not_yet_valid(server):
    """A certificate outside its validity period is refused at load, with the date."""
    now = dt.datetime.now(dt.timezone.utc)
    old = server.issue_client_cert(
        "old.example", not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1)
    )
    error = _raises("expired on", old.to_pkcs12(PASSWORD), PASSWORD)
    assert (now - dt.timedelta(days=1)).strftime("%Y-%m-%d") in str(error)
    future = self_signed_client_cert(not_before=now + dt.timedelta(days=2))
    _raises("check the machine's clock", future.to_pkcs12())


def test_bad_arguments(cert, tmp_path):
    """Wrong types, a pair that is not a pair, and verify=False are explained."""
    _raises("must be a path", 42)
    _raises("must be str or bytes", cert.to_pkcs12(), 1234)
    _raises("must be \\(cert_path, key_path\\)", ("a", "b", "c"))
    _raises("verify=False is not supported", cert.to_pkcs12(), verify=False)
    _raises("must be True or the path", cert.to_pkcs12(), verify=str(tmp_path / "no-ca.pem"))
