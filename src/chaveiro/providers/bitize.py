"""Bitize: ``{"consumer_key", "secret_key"}`` as JSON, expiry as a date-time string.

The request is not an OAuth 2.0 form: a JSON body with the two keys and nothing
else. The answer gives ``expiration_access_token`` as a date-time string in an
undocumented format; :func:`parse_expiry` reads every format seen in the wild,
and a time without an offset is Brasília time. When it cannot be read, the
token's JWT ``exp`` is used, else a short default lifetime, with a warning. The
refresh call is undocumented, so an expired token is replaced using the keys.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING

from chaveiro._auth import AuthOptions, ClientCredentialsAuth
from chaveiro._config import check_options, clean
from chaveiro._dialect import Dialect
from chaveiro._errors import excerpt

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DIALECT", "OTHER_TOKEN_URL", "TOKEN_URL", "BitizeAuth", "parse_expiry"]

logger = logging.getLogger("chaveiro")

TOKEN_URL = "https://api.bitize.io/auth"
OTHER_TOKEN_URL = "https://api.bitize.com.io/auth"
"""The host Bitize's reference shows beside :data:`TOKEN_URL`; pass it as ``token_url=`` if yours
answers there."""

_ISO = re.compile(
    r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})[T ](?P<H>[0-9]{2}):(?P<M>[0-9]{2})"
    r"(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)? ?(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.IGNORECASE,
)
_BR = re.compile(
    r"(?P<d>[0-9]{2})/(?P<m>[0-9]{2})/(?P<y>[0-9]{4})[ T](?P<H>[0-9]{2}):(?P<M>[0-9]{2})"
    r"(?::(?P<S>[0-9]{2}))?"
)


@functools.cache
def _brasilia() -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 - on first use

    try:
        return ZoneInfo("America/Sao_Paulo")
    except ZoneInfoNotFoundError:
        # No time zone database (minimal containers): Brasília has kept UTC-3 all year since 2019.
        return timezone(timedelta(hours=-3), "-03")


def _offset(text: str) -> tzinfo:
    if text.upper() == "Z":
        return timezone.utc
    hours, minutes = int(text[1:3]), int(text[-2:]) if len(text) > 3 else 0
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def parse_expiry(value: object) -> float | None:
    """A Bitize date-time as seconds since the epoch; ``None`` if it is not one.

    Accepts ISO 8601 with an offset or ``Z``, ISO 8601 without one,
    ``YYYY-MM-DD HH:MM:SS`` and ``DD/MM/YYYY HH:MM:SS``. Times without an offset
    are ``America/Sao_Paulo``. Never raises.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    match = _ISO.fullmatch(text) or _BR.fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    fraction = (parts.get("f") or "")[:6].ljust(6, "0")
    zone = parts.get("tz")
    try:
        when = datetime(
            int(parts["y"]),
            int(parts["m"]),
            int(parts["d"]),
            int(parts["H"]),
            int(parts["M"]),
            int(parts["S"] or 0),
            int(fraction),
            tzinfo=_offset(zone) if zone else _brasilia(),
        )
        return when.timestamp()
    except (ValueError, OverflowError):
        return None


def _expiry(payload: Mapping[str, object], now: float) -> float | None:
    raw = payload.get("expiration_access_token")
    expires_at = parse_expiry(raw)
    if expires_at is None and raw is not None:
        logger.warning(
            "cannot read Bitize's expiration_access_token=%s; using the token's JWT exp,"
            " else a default lifetime",
            excerpt(repr(raw)[:400], 40),
        )
    return expires_at


DIALECT = Dialect(
    name="bitize",
    grant_type=None,
    id_field="consumer_key",
    secret_field="secret_key",  # noqa: S106 - a field name, not a password
    expiry_field=_expiry,
    rejected_hint=(
        "Check the consumer key and secret key (Configurações > Integrações). The secret key is"
        " shown only once: if it was lost, create a new integration."
    ),
)


class BitizeAuth(ClientCredentialsAuth):
    """Bitize integration keys: ``consumer_key`` and ``secret_key``.

    The default ``token_url`` is ``https://api.bitize.io/auth``; Bitize also documents
    ``https://api.bitize.com.io/auth`` (``OTHER_TOKEN_URL`` in this module).
    """

    dialect = DIALECT
    env_prefix = "BITIZE"
    env_fields = (
        ("consumer_key", "CONSUMER_KEY", True),
        ("secret_key", "SECRET_KEY", True),
        ("token_url", "TOKEN_URL", False),
    )

    def __init__(
        self,
        consumer_key: str,
        secret_key: str,
        *,
        token_url: str = TOKEN_URL,
        **options: Unpack[AuthOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        key = clean("consumer_key", consumer_key)
        secret = clean("secret_key", secret_key)
        assert key is not None
        super().__init__(token_url, key, secret, auth_method="client_secret_json", **options)
