"""``chaveiro inspect``: what a JWT says, decoded but not verified."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

__all__ = ["describe", "duration", "jwt_parts"]


def jwt_parts(token: str) -> tuple[dict[str, object], dict[str, object]] | None:
    """Header and claims of a compact JWS, or ``None`` if ``token`` is not one."""
    pieces = token.strip().split(".")
    if len(pieces) != 3:
        return None
    decoded: list[dict[str, object]] = []
    for piece in pieces[:2]:
        try:
            value = json.loads(base64.urlsafe_b64decode(piece + "=" * (-len(piece) % 4)))
        except (ValueError, binascii.Error, RecursionError):
            return None
        if not isinstance(value, dict):
            return None
        decoded.append(value)
    return decoded[0], decoded[1]


def duration(seconds: float) -> str:
    """``3725`` → ``1 h 2 min 5 s``."""
    seconds = int(abs(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} min")
    parts.append(f"{secs} s")
    return " ".join(parts)


def _when(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(header: dict[str, object], claims: dict[str, object], now: float) -> dict[str, object]:
    """A summary of a decoded token: its parts, its times, and the time left."""
    summary: dict[str, object] = {"verified": False, "header": header, "claims": claims}
    for claim in ("iat", "nbf", "exp"):
        when = _when(claims.get(claim))
        if when is not None:
            summary[claim + "_utc"] = when
    exp = claims.get("exp")
    if _when(exp) is not None:
        assert isinstance(exp, int | float)
        summary["expires_in"] = round(exp - now, 1)
    return summary
