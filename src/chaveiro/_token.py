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

from chaveiro._errors import excerpt

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "Clock",
    "Identity",
    "Token",
    "choose_expiry",
    "fingerprint",
    "jwt_claims",
    "normalize_scope",
]

logger = logging.getLogger("chaveiro")

Clock = Callable[[], float]
"""A wall clock in seconds since the epoch, like :func:`time.time`."""

DEFAULT_LEEWAY = 30.0
"""Renew this many seconds before expiry (never more than half the lifetime)."""

DEFAULT_LIFETIME = 300.0
"""Lifetime assumed, with a warning, when nothing in the response tells it."""

MAX_LIFETIME = 7 * 24 * 3600.0
"""Longer lifetimes are clamped to this, with a warning: a token is never cached forever."""

_MAX_JWT_CHARS = 64 * 1024


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
    half_life: float = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "authorization", f"{self.token_type} {self.access_token}")
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
    key: str = field(init=False, repr=False, compare=False)
    """A cache key: a hash of all the above, safe for file names and Redis keys."""

    def __post_init__(self) -> None:
        scope = " ".join(sorted(self.scope.split())) if self.scope else ""
        canonical = json.dumps(
            [self.token_url, self.client_id, scope, sorted(self.extra), self.secret_digest]
        )
        object.__setattr__(self, "key", hashlib.sha256(canonical.encode()).hexdigest()[:40])

    @classmethod
    def of(
        cls,
        token_url: str,
        client_id: str,
        secret: str | bytes,
        scope: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Identity:
        raw = secret.encode() if isinstance(secret, str) else secret
        digest = hashlib.sha256(b"chaveiro-secret\0" + raw).hexdigest()
        return cls(token_url, client_id, scope, tuple(sorted((extra or {}).items())), digest)


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
