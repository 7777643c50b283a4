"""Client certificates for mutual TLS: load, check, and hand to any HTTP library.

:func:`client_tls` reads what banks hand out, a ``.crt``/``.key`` pair, one PEM
holding both, or a PKCS#12 (``.p12``/``.pfx``) with its password, checks it
(the key belongs to the certificate, the certificate is in its validity
period) and returns a :class:`ClientTLS`: the certificate's SHA-256 thumbprint
(RFC 8705 ``x5t#S256``), an :class:`ssl.SSLContext` for httpx and aiohttp, and
a ``cert=`` value for requests.

Keys at rest. Python's :mod:`ssl` loads keys only from files. The context is
built from the user's own files when they are PEM; otherwise from a copy whose
key is encrypted under a random passphrase that never leaves this process,
written 0600 in a 0700 directory and deleted as soon as it is loaded. requests
cannot pass a key password, so only :attr:`ClientTLS.requests_cert` of a
PKCS#12 (or an encrypted PEM key) writes the key in clear: 0600 in a private
0700 directory, removed by :meth:`ClientTLS.close`, when the object is
collected, or at exit. No HTTP library is imported here; cryptography only when
a certificate is loaded.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import os
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from chaveiro._errors import ClientCertificateError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["ClientCert", "ClientTLS", "client_tls"]

StrPath: TypeAlias = "str | os.PathLike[str]"
ClientCert: TypeAlias = "str | os.PathLike[str] | tuple[StrPath, StrPath] | bytes"
"""``(cert, key)`` PEM paths, one PEM path holding both, or a PKCS#12 path or its bytes."""
_PEM = b"-----BEGIN"
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S
)


@dataclass(frozen=True, slots=True)
class _Loaded:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes = field(repr=False)


def _text_path(value: object) -> str:
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path.strip():
            return path
    raise ClientCertificateError(
        "client_cert must be a path to a PEM or PKCS#12 file, a (cert, key) pair of PEM"
        f" paths, or the bytes of a PKCS#12 file, not {type(value).__name__}."
    )


def _read(path: str, what: str = "client_cert") -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        message = f"{what} file {path!r} was not found: check the path (relative to {os.getcwd()})."
    except IsADirectoryError:
        message = f"{what} {path!r} is a directory: pass the certificate file inside it."
    except OSError as exc:
        message = f"{what} file {path!r} cannot be read ({exc.strerror}): check its permissions."
    raise ClientCertificateError(message)


def _password(value: object) -> bytes | None:
    if value is None or value in ("", b""):
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ClientCertificateError(
        f"client_cert_password must be str or bytes, not {type(value).__name__}."
    )


def _load_pem(cert_pem: bytes, key_pem: bytes, password: bytes | None, where: str) -> _Loaded:
    from cryptography import x509  # noqa: PLC0415 - only when a certificate is used
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ClientCertificateError(
            f"{where} holds no readable PEM certificate: pass the certificate (.crt/.pem) the"
            " bank issued, or its PKCS#12 (.p12/.pfx) file."
        ) from None
    block = _KEY_BLOCK.search(key_pem)
    if block is None:
        raise ClientCertificateError(
            f"{where} holds no private key: pass client_cert=(cert_path, key_path), or one PEM"
            " file with both the key and the certificate."
        )
    try:
        key = serialization.load_pem_private_key(block.group(0), password)
    except TypeError:
        raise ClientCertificateError(
            f"the private key in {where} is encrypted: pass its password as client_cert_password=."
            if password is None
            else f"the private key in {where} is not encrypted: drop client_cert_password=."
        ) from None
    except ValueError:
        raise ClientCertificateError(
            f"the private key in {where} cannot be read: check client_cert_password= (it may"
            " be wrong) and that the file holds an RSA or EC key in PEM."
        ) from None
    return _Loaded(certs[0], tuple(certs[1:]), key)


def _load_pkcs12(data: bytes, password: bytes | None, where: str) -> _Loaded:
    from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: PLC0415

    try:
        key, leaf, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        hint = (
            "pass its password as client_cert_password="
            if password is None
            else ("check client_cert_password= (it is wrong)")
        )
        raise ClientCertificateError(
            f"{where} could not be opened as PKCS#12: {hint}, or pass a PEM certificate"
            " and key instead."
        ) from None
    if key is None or leaf is None:
        raise ClientCertificateError(
            f"{where} lacks the {'private key' if key is None else 'certificate'}: export the"
            " PKCS#12 again with both the certificate and its private key."
        )
    return _Loaded(leaf, tuple(extra), key)


def _check(loaded: _Loaded, where: str, now: dt.datetime) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if loaded.key.public_key().public_bytes(*spki) != loaded.leaf.public_key().public_bytes(*spki):
        raise ClientCertificateError(
            f"the private key in {where} does not belong to its certificate: pass the key that"
            " was generated with this certificate."
        )
    if now > loaded.leaf.not_valid_after_utc:
        raise ClientCertificateError(
            f"the client certificate in {where} expired on"
            f" {loaded.leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: ask the issuer (the bank's"
            " portal) for a new one."
        )
    if now < loaded.leaf.not_valid_before_utc:
        raise ClientCertificateError(
            f"the client certificate in {where} is valid only from"
            f" {loaded.leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check the machine's clock."
        )


def _pem_bundle(loaded: _Loaded, passphrase: bytes | None) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    key = loaded.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    certs = (loaded.leaf, *loaded.chain)
    return key + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _private_file(data: bytes, name: str) -> tuple[str, str]:
    """``data`` in a new 0700 directory, as a 0600 file; returns (directory, path)."""
    directory = tempfile.mkdtemp(prefix="chaveiro-cert-")  # 0700, owned by us
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return directory, path


def _default_cafile() -> str | None:
    try:
        import certifi  # noqa: PLC0415 - the CA bundle requests and httpx use too
    except ImportError:  # pragma: no cover - installed with requests and httpx
        return None
    return certifi.where()


@dataclass(frozen=True, eq=False)
class ClientTLS:
    """A client certificate, loaded and checked, for every HTTP library.

    >>> tls = client_tls("empresa.p12", client_cert_password="senha")
    >>> httpx.Client(verify=tls.ssl_context)            # httpx, sync and async
    >>> aiohttp.TCPConnector(ssl=tls.ssl_context)       # aiohttp
    >>> session.cert, session.verify = tls.requests_cert, tls.verify   # requests

    The API calls to a certificate-bound API must carry the same certificate as
    the token request: build both from the same ``client_cert=``.
    """

    thumbprint: str
    """SHA-256 of the certificate (DER), base64url: RFC 8705 ``x5t#S256``."""
    subject: str
    """The certificate's subject, as an RFC 4514 string."""
    not_after: dt.datetime
    """When the certificate expires (UTC)."""
    verify: Literal[True] | str
    """How the server is verified: ``True`` (the certifi bundle) or a CA file or directory."""
    self_signed: bool
    """Issued by itself (its subject is its issuer): for ``self_signed_tls_client_auth``."""
    _source: ClientCert = field(repr=False)
    _password: bytes | None = field(repr=False)
    _loaded: _Loaded = field(repr=False)
    _pem_files: tuple[str, str | None] | None = field(repr=False)
    """The user's own PEM files, usable as they are (no password), else ``None``."""
    _files: dict[str, Any] = field(default_factory=dict, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels as its inputs (like an auth object's secret); loaded again on arrival.
        return (_rebuild, (self._source, self._password, self.verify))

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """A client context: verifies the server (``verify``) and presents the certificate."""
        if self.verify is True:
            context = ssl.create_default_context(cafile=_default_cafile())
        elif os.path.isdir(self.verify):
            context = ssl.create_default_context(capath=self.verify)
        else:
            context = ssl.create_default_context(cafile=self.verify)
        if self._pem_files is not None:
            context.load_cert_chain(*self._pem_files)  # the user's own files, as they are
            return context
        passphrase = secrets.token_bytes(32)  # never leaves this process
        directory, path = _private_file(_pem_bundle(self._loaded, passphrase), "client.pem")
        try:
            context.load_cert_chain(path, password=passphrase)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return context

    @property
    def requests_cert(self) -> str | tuple[str, str]:
        """The ``cert=`` value for requests (a path, or a ``(cert, key)`` pair of paths).

        PEM files with an unencrypted key are passed as they are. Anything else is
        written once, key in clear (requests cannot pass a password), 0600 in a
        private 0700 directory that :meth:`close` removes, as does collection or exit.
        """
        given = self._pem_files
        if given is not None:
            return given[0] if given[1] is None else (given[0], given[1])
        with _FILES_LOCK:
            if "path" not in self._files:
                directory, path = _private_file(_pem_bundle(self._loaded, None), "client.pem")
                self._files["path"] = path
                self._files["finalizer"] = weakref.finalize(
                    self, shutil.rmtree, directory, ignore_errors=True
                )
            return str(self._files["path"])

    def close(self) -> None:
        """Remove the file :attr:`requests_cert` may have written (a no-op otherwise)."""
        with _FILES_LOCK:
            finalizer = self._files.pop("finalizer", None)
            self._files.pop("path", None)
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> ClientTLS:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_FILES_LOCK = threading.Lock()


def _rebuild(source: ClientCert, password: bytes | None, verify: Literal[True] | str) -> ClientTLS:
    return client_tls(source, password, verify=verify)


def _check_verify(verify: object) -> Literal[True] | str:
    if verify is True:
        return True
    if verify is False:
        raise ClientCertificateError(
            "verify=False is not supported: a client certificate must only be shown to the"
            " right server. Pass the server's CA file as verify='ca.pem'."
        )
    path = _text_path(verify) if isinstance(verify, str | os.PathLike) else None
    if path is None or not os.path.exists(path):
        raise ClientCertificateError(
            f"verify={verify!r} must be True or the path of a CA file or directory that exists."
        )
    return path


def client_tls(
    client_cert: ClientCert,
    client_cert_password: str | bytes | None = None,
    *,
    verify: bool | StrPath = True,
) -> ClientTLS:
    """Load a client certificate for mutual TLS; see :class:`ClientTLS` for what it gives.

    ``client_cert`` is a ``(cert, key)`` pair of PEM paths, one PEM path holding
    both, or a PKCS#12 (``.p12``/``.pfx``) path or its bytes;
    ``client_cert_password`` opens an encrypted PKCS#12 or PEM key. ``verify``
    is ``True`` (the certifi bundle) or the server's CA file or directory.
    Raises :class:`ClientCertificateError` (a ``ConfigurationError``) saying
    what to fix: a missing file, a wrong password, a key that does not match,
    an expired certificate.
    """
    password = _password(client_cert_password)
    checked_verify = _check_verify(verify)
    source: ClientCert
    pem_files: tuple[str, str | None] | None = None
    if isinstance(client_cert, tuple | list):
        if len(client_cert) != 2:
            raise ClientCertificateError(
                "client_cert as a pair must be (cert_path, key_path), two PEM files."
            )
        cert_path, key_path = _text_path(client_cert[0]), _text_path(client_cert[1])
        source, where = (cert_path, key_path), f"{cert_path!r} / {key_path!r}"
        loaded = _load_pem(_read(cert_path), _read(key_path, "key"), password, where)
        pem_files = (cert_path, key_path)
    elif isinstance(client_cert, bytes | bytearray):
        source, where = bytes(client_cert), "the client_cert bytes"
        if _PEM in source:
            loaded = _load_pem(source, source, password, where)
        else:
            loaded = _load_pkcs12(source, password, where)
    else:
        path = _text_path(client_cert)
        data, source, where = _read(path), path, repr(path)
        if _PEM in data:
            loaded = _load_pem(data, data, password, where)
            pem_files = (path, None)
        else:
            loaded = _load_pkcs12(data, password, where)
    _check(loaded, where, dt.datetime.now(dt.timezone.utc))
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    der = loaded.leaf.public_bytes(serialization.Encoding.DER)
    thumb = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")
    return ClientTLS(
        thumbprint=thumb,
        subject=loaded.leaf.subject.rfc4514_string(),
        not_after=loaded.leaf.not_valid_after_utc,
        verify=checked_verify,
        self_signed=loaded.leaf.issuer == loaded.leaf.subject,
        _source=source,
        _password=password,
        _loaded=loaded,
        _pem_files=pem_files if password is None else None,
    )
