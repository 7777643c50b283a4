"""Client assertions: the ones chaveiro signs (RFC 10070), and the ones a platform supplies.

chaveiro's own assertions (``private_key_jwt``, ``client_secret_jwt``) are
signed by :mod:`chaveiro._dialect`; this module decides what they say: their
audience (the issuer when it is known, RFC 10070), their ``typ`` and the
thumbprints of the key's certificate in their header.

An externally supplied assertion - ``client_assertion=`` (a callable) or
``client_assertion_file=`` (a file that a platform keeps fresh) - is obtained
once per token request by :func:`obtain` and sent exactly as supplied. Its
source, never its content, is part of the token's identity: a rotated file
is the same client, and causes no token request by itself.

:func:`check_assertions` checks every argument of both kinds at construction
and returns an :class:`AssertionSettings`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from chaveiro._config import check_url, encodable
from chaveiro._errors import ChaveiroError, ClientAssertionError, ConfigurationError, excerpt

__all__ = [
    "ASSERTION_TYP",
    "ASSERTION_TYPE",
    "NO_ASSERTIONS",
    "AssertionFile",
    "AssertionSettings",
    "AssertionSource",
    "certificate_header",
    "check_assertions",
    "obtain",
    "source_identity",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""``client_assertion_type`` of every client assertion (RFC 7523 §2.2)."""
ASSERTION_TYP = "client-authentication+jwt"
"""The ``typ`` header of chaveiro's own assertions (RFC 10070 explicit typing)."""
MAX_ASSERTION_BYTES = 64 * 1024
"""A longer file or string is not a client assertion: it is refused, not sent."""

AssertionSource = Callable[[], str]
"""A callable without arguments that returns a client assertion (a JWT) as a string."""

_AUDIENCES = ("issuer", "token_endpoint")
_SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post", "private_key_jwt"})
"""Methods an assertion source replaces: the default, and those adapters set for their secret."""


@dataclass(frozen=True, slots=True)
class AssertionSettings:
    """What ``issuer=``, ``assertion_audience=`` and the assertion source amount to."""

    issuer: str | None = None
    audience: str | None = None
    """``aud`` of chaveiro's own assertions; ``None``: the token endpoint URL."""
    source: AssertionSource | None = field(default=None, compare=False)
    """Where an externally supplied assertion comes from; ``None`` when chaveiro signs."""
    source_id: str | None = None
    """The source as part of the token's identity (a file's path, a function's name)."""


NO_ASSERTIONS = AssertionSettings()


@dataclass(frozen=True, slots=True)
class AssertionFile:
    """A client assertion in a file, read afresh at every token request.

    Platforms rotate these files (kubelet replaces a projected service account
    token well before it expires), so the content is never kept: reading a few
    hundred bytes once per token request costs less than deciding whether the
    file changed. ``hint`` is added to the error when the file is missing.
    """

    path: str
    hint: str = field(default="", repr=False, compare=False)

    @property
    def chaveiro_identity(self) -> str:
        return f"file:{self.path}"

    def __call__(self) -> str:
        try:
            with open(self.path, "rb") as file:
                data = file.read(MAX_ASSERTION_BYTES + 1)
        except FileNotFoundError:
            raise ConfigurationError(
                f"The client assertion file {self.path} does not exist; no token request was"
                f" sent. {self.hint or 'Check client_assertion_file.'}"
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"The client assertion file {self.path} cannot be read ({exc.strerror or exc});"
                " no token request was sent. Check its permissions for this process's user."
            ) from None
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = None
        if not text or len(data) > MAX_ASSERTION_BYTES:
            what = "is empty" if text == "" else "does not hold a JWT"
            raise ConfigurationError(
                f"The client assertion file {self.path} {what}; no token request was sent."
                " It should hold one JWT (a service account token, say) and nothing else."
            )
        return text


def source_identity(source: AssertionSource) -> str:
    """What makes two assertion sources the same client, independently of what they return.

    A file's path; a module-level function's qualified name (the same in every
    process, so a shared cache shares the token); otherwise the object itself,
    in this process (a bound method: its object and function).
    """
    named = getattr(source, "chaveiro_identity", None)
    if isinstance(named, str) and named:
        return named
    if inspect.ismethod(source):
        func = source.__func__
        return f"method:{func.__module__}.{func.__qualname__}@{id(source.__self__):x}"
    if isinstance(source, functools.partial):
        return f"partial@{id(source):x}"
    qualname = getattr(source, "__qualname__", None)
    module = getattr(source, "__module__", None)
    if isinstance(qualname, str) and isinstance(module, str) and "<" not in qualname:
        return f"function:{module}.{qualname}"
    return f"object:{type(source).__qualname__}@{id(source):x}"


def _describe(source: AssertionSource) -> str:
    if isinstance(source, AssertionFile):
        return f"file {source.path}"
    name = getattr(source, "__qualname__", None) or type(source).__qualname__
    return excerpt(str(name), 80)


def obtain(source: AssertionSource, token_url: str) -> str:
    """The assertion ``source`` gives now, checked; a typed error if it fails.

    Called once per token request (retries included), never per API call.
    """
    name = _describe(source)
    try:
        value: object = source()
    except ChaveiroError:
        raise
    except Exception as exc:
        raise ClientAssertionError(
            f"The client assertion source {name} raised {type(exc).__name__}:"
            f" {excerpt(str(exc), 160)}. No token request was sent to {token_url}; chaveiro"
            " asks the source again at the next token request after a short pause.",
            token_url=token_url,
            source=name,
        ) from exc
    if not isinstance(value, str) or not value.strip():
        shown = "an empty string" if isinstance(value, str) else type(value).__name__
        raise ConfigurationError(
            f"The client assertion source {name} returned {shown}: it must return the"
            " assertion (a JWT) as a non-empty string."
        )
    if len(value) > MAX_ASSERTION_BYTES:
        raise ConfigurationError(
            f"The client assertion source {name} returned {len(value)} characters: that is"
            " not a client assertion (a JWT of a few hundred characters)."
        )
    return encodable("the client assertion", value)


def check_assertions(
    owner: str,
    token_url: str,
    auth_method: str,
    credential: object,
    issuer: object,
    assertion_audience: object,
    client_assertion: object,
    client_assertion_file: object,
    allow_insecure_http: bool,
) -> AssertionSettings:
    """Check the assertion arguments of ``owner``'s constructor, at construction.

    ``credential`` is the client secret or private key given, if any: a
    supplied assertion replaces them.
    """
    known = None
    if issuer is not None:
        known = check_url(issuer, allow_insecure_http=allow_insecure_http, what="issuer")
    if not isinstance(assertion_audience, str) or not assertion_audience.strip():
        raise ConfigurationError(
            f"assertion_audience={assertion_audience!r} is not valid: use 'issuer' (the"
            " default, RFC 10070), 'token_endpoint', or the exact audience the server wants."
        )
    wanted = encodable("assertion_audience", assertion_audience.strip())
    if wanted not in _AUDIENCES:
        audience: str | None = wanted
    else:
        audience = known if wanted == "issuer" else None
    source = _source(client_assertion, client_assertion_file)
    if source is None:
        return AssertionSettings(known, audience)
    if auth_method not in _SECRET_METHODS:
        raise ConfigurationError(
            f"{owner} with auth_method={auth_method!r} cannot send a client assertion:"
            " it authenticates with its own keys or certificate. Drop client_assertion and"
            " client_assertion_file, or use ClientCredentialsAuth."
        )
    if credential is not None and (not isinstance(credential, str) or credential.strip()):
        raise ConfigurationError(
            "A client assertion replaces the client secret or private key: pass"
            " client_assertion/client_assertion_file, or a secret, not both."
        )
    return AssertionSettings(known, audience, source, source_identity(source))


def _source(client_assertion: object, client_assertion_file: object) -> AssertionSource | None:
    if client_assertion is not None and client_assertion_file is not None:
        raise ConfigurationError("Pass client_assertion or client_assertion_file, not both.")
    if client_assertion_file is not None:
        if not isinstance(client_assertion_file, str | os.PathLike) or not os.fspath(
            client_assertion_file
        ):
            raise ConfigurationError(
                "client_assertion_file must be the path of the file that holds the assertion,"
                " e.g. '/var/run/secrets/tokens/token'."
            )
        path = os.path.abspath(os.fspath(client_assertion_file))
        return AssertionFile(encodable("client_assertion_file", str(path)))
    if client_assertion is None:
        return None
    if isinstance(client_assertion, str | bytes) or not callable(client_assertion):
        raise ConfigurationError(
            "client_assertion must be a callable that returns the assertion (a JWT) as a"
            " string: chaveiro calls it at every token request, so the assertion is always"
            " fresh. For a file, pass client_assertion_file= instead."
        )
    source: AssertionSource = client_assertion
    return source


def certificate_header(pem: bytes) -> dict[str, str]:
    """``x5t#S256`` and ``x5t`` of the certificate in a key's PEM, if it holds one.

    Microsoft Entra ID finds a certificate credential by these thumbprints. The
    certificate must be that of the private key in the same PEM; a PEM without
    a certificate gives an empty header.
    """
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return {}
    from cryptography import x509  # noqa: PLC0415 - certificates in a key bundle only
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        certificate = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            "private_key holds a certificate that cannot be read: pass the PEM text of the"
            " key, optionally followed by its own certificate."
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if certificate.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
        encoding, public
    ):
        raise ConfigurationError(
            "The certificate in private_key is not the key's own: pass the key with the"
            " certificate registered for it at the provider."
        )
    der = certificate.public_bytes(encoding)

    def thumbprint(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    return {
        "x5t#S256": thumbprint(hashlib.sha256(der).digest()),
        "x5t": thumbprint(hashlib.sha1(der, usedforsecurity=False).digest()),
    }
