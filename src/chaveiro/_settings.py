"""What a client is configured with, checked at construction: :class:`ClientSettings`.

Sans I/O, like the dialects that turn these settings into token requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast, get_args

from chaveiro._assertions import ASSERTION_TYP, NO_ASSERTIONS, AssertionSettings, certificate_header
from chaveiro._errors import ConfigurationError

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

    from chaveiro._dpop import DPoP

__all__ = [
    "AUTH_METHODS",
    "CERTIFICATE_METHODS",
    "AuthMethod",
    "BodyFormat",
    "ClientSettings",
    "GrantTypeIn",
]

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_json",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
AUTH_METHODS: tuple[str, ...] = get_args(AuthMethod)
CERTIFICATE_METHODS = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
"""RFC 8705 §2: the client is authenticated by its TLS certificate; no secret is sent."""
BodyFormat = Literal["form", "json"]
GrantTypeIn = Literal["body", "query"]
_BODY_FORMATS: tuple[str, ...] = get_args(BodyFormat)
_GRANT_TYPE_PLACES: tuple[str, ...] = get_args(GrantTypeIn)
_RESERVED = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "scope",
        "refresh_token",
    }
)
_DEFAULT_ALGS = {"client_secret_jwt": "HS256", "private_key_jwt": "RS256"}
"""The signing algorithm of each JWT auth method when ``signing_alg`` is not given."""
_KEY_TYPES = {"RS": "RSAKey", "PS": "RSAKey", "ES": "ECKey", "Ed": "OKPKey"}
"""joserfc key class by the first two letters of the signing algorithm."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything needed to build a token request, secrets included (never shown)."""

    token_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: str = "client_secret_basic"
    scope: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    private_key: bytes | None = field(default=None, repr=False)
    signing_alg: str | None = None
    key_id: str | None = None
    body_format: BodyFormat | None = None
    """Overrides the dialect's ``body_format`` when set."""
    grant_type_in: GrantTypeIn | None = None
    """Overrides the dialect's ``grant_type_in`` when set."""
    assertions: AssertionSettings = NO_ASSERTIONS
    """The audience of chaveiro's own assertions, or the source of a supplied one."""
    dpop: DPoP | None = None
    """DPoP (RFC 9449): every token request carries a proof made with this key."""

    def __post_init__(self) -> None:
        if self.auth_method not in AUTH_METHODS:
            raise ConfigurationError(
                f"auth_method={self.auth_method!r} is not supported; use one of {AUTH_METHODS}."
            )
        if self.body_format not in (None, *_BODY_FORMATS):
            raise ConfigurationError(
                f"body_format={self.body_format!r} is not supported; use 'form' or 'json'."
            )
        if self.grant_type_in not in (None, *_GRANT_TYPE_PLACES):
            raise ConfigurationError(
                f"grant_type_in={self.grant_type_in!r} is not supported; use 'body' or 'query'."
            )
        bad = sorted(_RESERVED.intersection(k for k, _ in self.extra))
        if bad:
            raise ConfigurationError(
                f"extra_params may not set {', '.join(bad)}: pass them as their own arguments."
            )
        if self.assertions.source is not None:
            if self.client_secret or self.private_key:
                raise ConfigurationError(
                    "A client assertion replaces the client secret or private key: pass one"
                    " or the other."
                )
        elif self.auth_method == "private_key_jwt":
            if not self.private_key:
                raise ConfigurationError("auth_method='private_key_jwt' needs private_key=<PEM>.")
            self.assertion_header()  # fail at construction, not at the first request
        elif self.auth_method in CERTIFICATE_METHODS:
            if self.client_secret:
                raise ConfigurationError(
                    f"auth_method={self.auth_method!r} authenticates with the client certificate"
                    " and sends no secret: drop client_secret, or use client_secret_post or"
                    " client_secret_basic (they work over mTLS too)."
                )
        elif not self.client_secret:
            raise ConfigurationError(
                f"auth_method={self.auth_method!r} needs a non-empty client secret."
            )

    def assertion_header(self) -> dict[str, str]:
        """The header fields of chaveiro's own assertions, ``alg`` aside (RFC 10070 ``typ``).

        ``kid`` when a key id is given; the certificate's ``x5t#S256`` and ``x5t``
        when ``private_key`` holds the key's certificate after (or before) the key.
        """
        header = {"typ": ASSERTION_TYP}
        if self.key_id:
            header["kid"] = self.key_id
        if self.auth_method == "private_key_jwt" and self.private_key:
            self.signing_key()  # a key that cannot sign says so before its certificate does
            header.update(certificate_header(self.private_key))
        return header

    @property
    def alg(self) -> str | None:
        """The algorithm that signs client assertions; ``None`` for methods that sign none,
        and when the assertion is supplied (signed elsewhere)."""
        if self.assertions.source is not None:
            return None
        default = _DEFAULT_ALGS.get(self.auth_method)
        return None if default is None else self.signing_alg or default

    @property
    def client_auth(self) -> tuple[str, ...]:
        """How the client authenticates, as its identity counts it.

        The auth method, and for the JWT methods the signing algorithm and key id: a
        provider that refuses one way of authenticating may accept another, so a
        failure (and its cool-down) with one is not another's.
        """
        alg = self.alg
        return (self.auth_method,) if alg is None else (self.auth_method, alg, self.key_id or "")

    def signing_key(self) -> OctKey | RSAKey | ECKey | OKPKey:
        """The key that signs client assertions (JWT auth methods only)."""
        from joserfc import jwk  # noqa: PLC0415 - JWT auth methods only: keeps import cheap

        if self.auth_method == "client_secret_jwt":
            # Built directly: import_key() warns about short secrets at every request,
            # and the provider, not the user, chose the secret.
            secret = (self.client_secret or "").encode()
            return jwk.OctKey(secret, secret)
        alg = self.alg or ""
        type_name = _KEY_TYPES.get(alg[:2])
        if type_name is None:
            raise ConfigurationError(f"signing_alg={alg!r} is not supported for private_key_jwt.")
        key_type: type[RSAKey | ECKey | OKPKey] = getattr(jwk, type_name)
        try:
            return cast("RSAKey | ECKey | OKPKey", key_type.import_key(self.private_key or b""))
        except (ValueError, TypeError):
            # "from None": the loader's message may quote key material.
            raise ConfigurationError(
                f"private_key could not be loaded as a {type_name[:-3]} key for {alg}:"
                " pass the PEM text of an unencrypted private key."
            ) from None
