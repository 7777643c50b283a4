"""Certificates for the fake server's mTLS mode: a private CA, client certificates, matching.

RFC 8705 §2.1 (``tls_client_auth``): a client is registered with one expected
subject DN or subject alternative name, and authenticates by presenting a
certificate, issued by a CA the server trusts, that carries it. §2.2
(``self_signed_tls_client_auth``): the client registers its self-signed
certificate, which is then matched by its SHA-256 thumbprint.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chaveiro.testing._wire import thumbprint

if TYPE_CHECKING:
    import trustme

__all__ = ["ClientCertificate", "self_signed_client_cert"]

TlsMethod = Literal["tls_client_auth", "self_signed_tls_client_auth"]


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate and its private key (PEM), made for tests; the key is never shown.

    Feed it to chaveiro as the files a bank would hand out: ``cert_pem``/``key_pem``
    written as ``.crt``/``.key``, ``combined_pem`` as one PEM file, or
    ``to_pkcs12(password)`` as a ``.p12``/``.pfx``.
    """

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    chain_pem: bytes = b""
    """Intermediate CA certificates, if any (sent with the leaf in the handshake)."""

    @property
    def der(self) -> bytes:
        return _load(self.cert_pem).public_bytes(serialization.Encoding.DER)

    @property
    def thumbprint(self) -> str:
        """RFC 8705 ``x5t#S256``: what a certificate-bound token's ``cnf`` claim carries."""
        return thumbprint(self.der)

    @property
    def subject_dn(self) -> str:
        """The subject as an RFC 4514 string, as ``tls_client_auth_subject_dn`` expects it."""
        return _load(self.cert_pem).subject.rfc4514_string()

    @property
    def combined_pem(self) -> bytes:
        """Key, certificate and chain in one PEM (what ``client_cert='both.pem'`` reads)."""
        return self.key_pem + self.cert_pem + self.chain_pem

    def to_pkcs12(self, password: str | bytes | None = None, *, name: str = "client") -> bytes:
        """The key and certificates as PKCS#12 (``.p12``/``.pfx``), encrypted with ``password``."""
        secret = password.encode() if isinstance(password, str) else password
        key = serialization.load_pem_private_key(self.key_pem, None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError("only RSA and EC keys go into a PKCS#12 here")
        chain = x509.load_pem_x509_certificates(self.chain_pem) if self.chain_pem else None
        encryption = (
            serialization.BestAvailableEncryption(secret)
            if secret
            else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(
            name.encode(), key, _load(self.cert_pem), chain, encryption
        )


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def self_signed_client_cert(
    common_name: str = "chaveiro test client",
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> ClientCertificate:
    """A self-signed client certificate (for ``self_signed_tls_client_auth``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ClientCertificate(cert.public_bytes(serialization.Encoding.PEM), key_pem)


class PrivateCA:
    """The mTLS mode's CA: it signs the server's certificate and the clients' ones."""

    def __init__(self) -> None:
        try:
            import trustme  # noqa: PLC0415 - only the mTLS mode needs it
        except ImportError:  # pragma: no cover - trustme is in the test extra
            raise RuntimeError(
                "FakeTokenServer(mtls=True) needs trustme: pip install 'chaveiro[testing]'"
            ) from None
        self._ca: trustme.CA = trustme.CA(organization_name="chaveiro FakeTokenServer CA")

    @property
    def cert_pem(self) -> bytes:
        return self._ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        """TLS for 127.0.0.1/localhost that requires a client certificate from this CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def issue(
        self,
        *identities: str,
        common_name: str | None = None,
        organization_name: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ClientCertificate:
        leaf = self._ca.issue_cert(
            *identities,
            common_name=common_name,
            organization_name=organization_name,
            not_before=not_before,
            not_after=not_after,
        )
        pems = leaf.cert_chain_pems
        return ClientCertificate(
            pems[0].bytes(), leaf.private_key_pem.bytes(), b"".join(p.bytes() for p in pems[1:])
        )


@dataclass(frozen=True)
class CertRule:
    """How a registered client's certificate is recognised."""

    method: TlsMethod
    subject_dn: x509.Name | None = None
    san_dns: str | None = None
    san_uri: str | None = None
    san_ip: str | None = None
    san_email: str | None = None
    thumbprint: str | None = None

    def matches(self, der: bytes) -> bool:
        if self.method == "self_signed_tls_client_auth":
            return thumbprint(der) == self.thumbprint
        cert = x509.load_der_x509_certificate(der)
        if self.subject_dn is not None:
            return cert.subject == self.subject_dn
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        names: list[tuple[str, object]] = [
            *(("dns", d.lower()) for d in san.get_values_for_type(x509.DNSName)),
            *(("uri", u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)),
            *(("ip", ip) for ip in san.get_values_for_type(x509.IPAddress)),
            *(("email", e) for e in san.get_values_for_type(x509.RFC822Name)),
        ]
        return self._wanted() in names

    def _wanted(self) -> tuple[str, object]:
        if self.san_dns is not None:
            return "dns", self.san_dns.lower()
        if self.san_uri is not None:
            return "uri", self.san_uri
        if self.san_ip is not None:
            return "ip", ipaddress.ip_address(self.san_ip)
        return "email", self.san_email


def cert_rule(
    *,
    subject_dn: str | None,
    san_dns: str | None,
    san_uri: str | None,
    san_ip: str | None,
    san_email: str | None,
    self_signed_cert: bytes | str | None,
) -> CertRule | None:
    """The rule for ``add_client``'s certificate arguments (at most one may be given)."""
    given = [v for v in (subject_dn, san_dns, san_uri, san_ip, san_email, self_signed_cert) if v]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError("register one of subject_dn, the san_* values or self_signed_cert")
    if self_signed_cert:
        pem = self_signed_cert.encode() if isinstance(self_signed_cert, str) else self_signed_cert
        return CertRule(
            "self_signed_tls_client_auth", thumbprint=ClientCertificate(pem, b"").thumbprint
        )
    if san_ip is not None:
        ipaddress.ip_address(san_ip)  # ValueError now, not at the first request
    name = None if subject_dn is None else x509.Name.from_rfc4514_string(subject_dn)
    return CertRule("tls_client_auth", name, san_dns, san_uri, san_ip, san_email)
