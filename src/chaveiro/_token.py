"""Tokens, identities and the rules that decide how long a token lives.

Everything here is pure: the current time is always passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from chaveiro._errors import excerpt

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "TOKEN_FORMAT",
    "Clock",
    "Identity",
    "Token",
    "choose_expiry",
    "fingerprint",
    "jwt_claims",
    "normalize_scope",
]

logger = logging.getLogger("chaveiro")

_T = TypeVar("_T")

Clock = Callable[[], float]
"""A wall clock in seconds since the epoch, like :func:`time.time`."""

DEFAULT_LEEWAY = 30.0
"""Renew this many seconds before expiry (never more than half the lifetime)."""

DEFAULT_LIFETIME = 300.0
"""Lifetime assumed, with a warning, when nothing in the response tells it."""

MAX_LIFETIME = 7 * 24 * 3600.0
"""Longer lifetimes are clamped to this, with a warning: a token is never cached forever."""

_MAX_JWT_CHARS = 64 * 1024

TOKEN_FORMAT = 1
"""Version of the JSON that :meth:`Token.to_json` writes; other versions read as no token."""

_MAX_STORED_CHARS = 256 * 1024
_FORMAT_FIELD = "chaveiro_token"


def fingerprint(secret: str) -> str:
    """A short, non-reversible label for a token, safe to log."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Token:
    """An access token. Frozen; its ``repr`` shows a fingerprint, never the token."""

    access_token: str = field(repr=False)
    expires_at: float
    issued_at: float
    token_type: str = "Bearer"
    scope: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    authorization: str = field(init=False, repr=False, compare=False)
    """The ``Authorization`` header value, ready to send."""
    ath: str = field(init=False, repr=False, compare=False)
    """A DPoP token's hash for proofs (RFC 9449 §4.2 ``ath``); empty for other tokens."""
    half_life: float = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "authorization", f"{self.token_type} {self.access_token}")
        ath = ""
        if self.token_type == "DPoP":
            digest = hashlib.sha256(self.access_token.encode("ascii", "replace")).digest()
            ath = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        object.__setattr__(self, "ath", ath)
        object.__setattr__(self, "half_life", max(0.0, (self.expires_at - self.issued_at) / 2))
        object.__setattr__(self, "fingerprint", fingerprint(self.access_token))

    def renew_at(self, leeway: float) -> float:
        """When to renew: ``leeway`` before expiry, but never before half the lifetime."""
        return self.expires_at - min(leeway, self.half_life)

    def is_fresh(self, now: float, leeway: float) -> bool:
        """True until the renewal time: the one rule that decides freshness."""
        return now < self.expires_at - min(leeway, self.half_life)

    def is_valid(self, now: float) -> bool:
        """True while the token has not expired (it may already be due for renewal)."""
        return now < self.expires_at

    def refresh_usable(self, now: float) -> bool:
        """True when a refresh token is held and has not expired."""
        if self.refresh_token is None:
            return False
        return self.refresh_expires_at is None or now < self.refresh_expires_at

    def to_json(self) -> str:
        """The token as JSON for a shared cache, tagged with its format (``TOKEN_FORMAT``)."""
        return json.dumps(
            {
                _FORMAT_FIELD: TOKEN_FORMAT,
                "access_token": self.access_token,
                "token_type": self.token_type,
                "expires_at": self.expires_at,
                "issued_at": self.issued_at,
                "scope": self.scope,
                "refresh_token": self.refresh_token,
                "refresh_expires_at": self.refresh_expires_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | bytes, *, source: str = "the cache") -> Token | None:
        """Read :meth:`to_json`'s output back; ``None``, with a warning, for anything else.

        A foreign, truncated, corrupted or differently versioned payload is never
        an error: the caller just has no token. ``source`` names it in the warning,
        which never quotes the payload (it may hold a token).
        """
        try:
            return _decode_token(data)
        except _UnreadableError as problem:
            logger.warning("ignoring the token stored in %s: %s", source, problem)
            return None


class _UnreadableError(ValueError):
    """Why a stored payload holds no token (the message never quotes the payload)."""


def _stored_text(obj: dict[str, object], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or not value.isprintable():
        raise _UnreadableError(f"{name} is missing or not a printable string")
    return value


def _stored_time(obj: dict[str, object], name: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _UnreadableError(f"{name} is missing or not a finite number")
    return float(value)


def _optional(
    obj: dict[str, object], name: str, read: Callable[[dict[str, object], str], _T]
) -> _T | None:
    return None if obj.get(name) is None else read(obj, name)


def _decode_token(data: str | bytes) -> Token:
    if len(data) > _MAX_STORED_CHARS:
        raise _UnreadableError(f"{len(data)} bytes is far too long for a token")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise _UnreadableError(f"not JSON ({len(data)} bytes; truncated or corrupted?)") from None
    if not isinstance(obj, dict) or _FORMAT_FIELD not in obj:
        raise _UnreadableError("not a token written by chaveiro")
    version = obj[_FORMAT_FIELD]
    if version != TOKEN_FORMAT or isinstance(version, bool):
        raise _UnreadableError(
            f"format {version!r:.20}, and this version of chaveiro reads format {TOKEN_FORMAT}"
        )
    access_token = _stored_text(obj, "access_token")
    token_type = _stored_text(obj, "token_type")
    if " " in access_token or " " in token_type:
        raise _UnreadableError("access_token or token_type holds a space")
    return Token(
        access_token=access_token,
        expires_at=_stored_time(obj, "expires_at"),
        issued_at=_stored_time(obj, "issued_at"),
        token_type=token_type,
        scope=_optional(obj, "scope", _stored_text),
        refresh_token=_optional(obj, "refresh_token", _stored_text),
        refresh_expires_at=_optional(obj, "refresh_expires_at", _stored_time),
    )


def normalize_scope(scope: str | Iterable[str] | None) -> str | None:
    """Scopes as one space-separated string, or ``None``; order is kept."""
    if scope is None:
        return None
    parts = scope.split() if isinstance(scope, str) else [s for p in scope for s in p.split()]
    return " ".join(dict.fromkeys(parts)) or None


@dataclass(frozen=True, slots=True)
class Identity:
    """What makes two auth objects share a token. Holds only a digest of the secret."""

    token_url: str
    client_id: str
    scope: str | None
    extra: tuple[tuple[str, str], ...]
    secret_digest: str = field(repr=False)
    cert_thumbprint: str | None = None
    """SHA-256 thumbprint of the client certificate (mTLS); tokens are bound to it."""
    client_auth: tuple[str, ...] = ()
    """How the client authenticates (auth method; for JWTs the algorithm and key id)."""
    assertion_source: str | None = None
    """Where a supplied client assertion comes from (a file's path...), never its content."""
    dpop: str | None = None
    """The DPoP key's RFC 7638 thumbprint (and whether a Bearer answer may stand in)."""
    key: str = field(init=False, repr=False, compare=False)
    """A cache key: a hash of all the above, safe for file names and Redis keys."""

    def __post_init__(self) -> None:
        scope = " ".join(sorted(self.scope.split())) if self.scope else ""
        parts: list[object] = [
            self.token_url,
            self.client_id,
            scope,
            sorted(self.extra),
            self.secret_digest,
        ]
        if self.cert_thumbprint is not None:  # keys without a certificate stay as they were
            parts.append(self.cert_thumbprint)
        if self.client_auth:
            parts.append(["auth", *self.client_auth])
        if self.assertion_source is not None:
            parts.append({"assertion_source": self.assertion_source})
        if self.dpop is not None:  # keys without DPoP stay as they were
            parts.append(["dpop", self.dpop])
        canonical = json.dumps(parts)
        object.__setattr__(self, "key", hashlib.sha256(canonical.encode()).hexdigest()[:40])

    @classmethod
    def of(
        cls,
        token_url: str,
        client_id: str,
        secret: str | bytes,
        scope: str | None = None,
        extra: Mapping[str, str] | None = None,
        *,
        thumbprint: str | None = None,
        client_auth: tuple[str, ...] = (),
        assertion_source: str | None = None,
        dpop: str | None = None,
    ) -> Identity:
        """The identity of these settings.

        ``thumbprint`` is the client certificate's, if any; ``client_auth`` says how the
        client authenticates (:attr:`ClientSettings.client_auth
        <chaveiro._settings.ClientSettings.client_auth>`); ``assertion_source``
        names where a supplied client assertion comes from (its source, not its
        content, so a rotated assertion keeps the token); ``dpop`` is the DPoP key's
        (:attr:`chaveiro._dpop.DPoP.identity`), if any: a token bound to one key or
        certificate is never used with another.
        """
        raw = secret.encode() if isinstance(secret, str) else secret
        digest = hashlib.sha256(b"chaveiro-secret\0" + raw).hexdigest()
        pairs = tuple(sorted((extra or {}).items()))
        return cls(
            token_url,
            client_id,
            scope,
            pairs,
            digest,
            thumbprint or None,
            client_auth,
            assertion_source,
            dpop or None,
        )


def jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a compact JWS, decoded but NOT verified; ``None`` if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > _MAX_JWT_CHARS:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            return None
    elif isinstance(value, str) and len(value) < 40:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _shown(raw: object) -> str:
    """A provider's value, short and token-free, for a log message."""
    return excerpt(repr(raw)[:400], 40)


def choose_expiry(
    now: float,
    *,
    expires_in: object = None,
    provider_expires_at: float | None = None,
    access_token: str = "",
    default_lifetime: float = DEFAULT_LIFETIME,
) -> float:
    """Pick a token's expiry time.

    In order: ``expires_in`` (seconds), the provider's own expiry time, the JWT
    ``exp`` claim, and finally ``default_lifetime`` with a warning. A value that
    is not a positive, finite number is skipped with a warning; a lifetime over
    :data:`MAX_LIFETIME` is clamped with a warning.
    """
    candidates: list[tuple[str, object, float | None]] = []
    if expires_in is not None:
        seconds = _as_seconds(expires_in)
        candidates.append(("expires_in", expires_in, None if seconds is None else now + seconds))
    if provider_expires_at is not None:
        candidates.append(("the provider's expiry time", provider_expires_at, provider_expires_at))
    claims = jwt_claims(access_token) if access_token else None
    if claims is not None and "exp" in claims:
        exp = _as_seconds(claims["exp"])
        candidates.append(("the JWT exp claim", claims["exp"], exp))
    for source, raw, expires_at in candidates:
        if expires_at is None or expires_at <= now:
            logger.warning("ignoring %s=%s: not a time in the future", source, _shown(raw))
            continue
        if expires_at - now > MAX_LIFETIME:
            logger.warning(
                "%s=%s is implausibly far away; treating the token as valid for %d s",
                source,
                _shown(raw),
                MAX_LIFETIME,
            )
            return now + MAX_LIFETIME
        return expires_at
    logger.warning(
        "the token response does not say when the token expires; assuming %d s", default_lifetime
    )
    return now + default_lifetime
