"""The wire format of token endpoints, sans I/O.

A :class:`Dialect` says how one kind of endpoint wants its token request and
how it answers. :func:`build_request` turns settings into a
:class:`TokenRequest` value; :func:`parse_response` turns ``(status, headers,
body, now)`` into a :class:`~chaveiro._token.Token` or a typed error. Neither
touches a socket or reads a clock. This is the only module that imports authlib, and
it does so (with joserfc and cryptography) only when a JWT auth method is used.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote_plus, urlencode

from chaveiro._assertions import ASSERTION_TYPE
from chaveiro._errors import (
    CredentialsRejectedError,
    DPoPNotSupportedError,
    InvalidTokenResponseError,
    TokenEndpointError,
    excerpt,
    hiding,
)
from chaveiro._settings import (
    AUTH_METHODS,
    CERTIFICATE_METHODS,
    BodyFormat,
    ClientSettings,
    GrantTypeIn,
)
from chaveiro._token import Token, choose_expiry, normalize_scope

__all__ = [
    "AUTH_METHODS",
    "CERTIFICATE_METHODS",
    "MAX_BODY_BYTES",
    "ClientSettings",
    "Dialect",
    "TokenRequest",
    "build_request",
    "parse_response",
    "parse_retry_after",
]

MAX_BODY_BYTES = 1024 * 1024
"""Token responses are read up to this size; the rest is ignored."""
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII: what an access token may hold to be sent as ``Bearer <token>``."""

_ASSERTION_LIFETIME = 120
"""Seconds a client assertion chaveiro signs is valid: well inside Auth0's 300 s limit, and long
enough for a clock a minute or two apart from the server's."""
_HINTS = {
    "invalid_client": "Check the client id and secret.",
    "unauthorized_client": "The client may not use this grant: enable it at the provider.",
    "invalid_scope": "Check the scope: the client may not be allowed to ask for it.",
    "invalid_grant": "The grant was refused: check the credentials or the refresh token.",
    "unsupported_grant_type": "The endpoint does not accept this grant: check token_url.",
    "invalid_request": "The endpoint found the request malformed: check token_url and auth_method.",
    "use_dpop_nonce": (
        "It kept asking for a new DPoP nonce although chaveiro retried with the one it gave:"
        " check the server's DPoP nonce settings and this machine's clock."
    ),
    "invalid_dpop_proof": (
        "It refused chaveiro's DPoP proof: check that it accepts the key's algorithm"
        " (dpop_alg=) and that this machine's clock is right."
    ),
}
_TOKEN_TYPES = {"bearer": "Bearer", "": "Bearer", "dpop": "DPoP"}
"""``token_type`` answers (RFC 6749 §7.1: case-insensitive) as chaveiro sends them."""
_NOT_DPOP = (
    "The token endpoint {url} answered a DPoP token request with a Bearer token: it does not"
    " support DPoP, or DPoP is off for this client. Turn DPoP on for the client at the"
    " provider (Keycloak 26.4 and later: the client's Settings tab, Capability config,"
    ' "Require DPoP bound tokens"), or pass dpop_allow_bearer=True to accept Bearer'
    " tokens, which are not bound to the key."
)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token request as plain data: what to send, not how."""

    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)
    method: str = "POST"


ExpiryField = Callable[[Mapping[str, object], float], float | None]
"""Reads a provider's own expiry field from a response: ``(payload, now) -> epoch``."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one kind of token endpoint speaks. Providers are values of this type."""

    name: str = "oauth2"
    grant_type: str | None = "client_credentials"
    """``None`` for endpoints that take credentials only (no OAuth2 grant field)."""
    id_field: str = "client_id"
    secret_field: str = "client_secret"
    headers: tuple[tuple[str, str], ...] = (("Accept", "application/json"),)
    expiry_field: ExpiryField | None = None
    rejected_hint: str = ""
    """Appended to the message when the credentials are rejected."""
    rejected_after_success_hint: str = ""
    """Appended instead when they are rejected after having worked in this process."""
    body_format: BodyFormat = "form"
    """``"json"``: the fields travel as a JSON object whatever the auth method (Efí sends
    HTTP Basic with a JSON body); ``client_secret_json`` always sends JSON."""
    grant_type_in: GrantTypeIn = "body"
    """``"query"``: ``grant_type`` travels in the URL's query string (as Santander wants)."""


OAUTH2 = Dialect()


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-encode id and secret, then base64 them.
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _assertion(settings: ClientSettings, now: float) -> str:
    """A client assertion signed now, as RFC 10070 has it.

    ``typ: client-authentication+jwt``; ``iss`` = ``sub`` = the client id; ``aud``
    = the issuer when known (else the token endpoint, or what
    ``assertion_audience`` says), as one string; a new ``jti`` at every call,
    so every token request (each retry too) sends a new assertion.
    """
    from authlib.oauth2.rfc7523 import (  # noqa: PLC0415 - JWT auth methods only
        client_secret_jwt_sign,
        private_key_jwt_sign,
    )

    key = settings.signing_key()
    options: dict[str, object] = {
        "issued_at": int(now),
        "expires_in": _ASSERTION_LIFETIME,
        "header": settings.assertion_header(),
        "alg": settings.alg,
    }
    if settings.auth_method == "client_secret_jwt":
        sign = client_secret_jwt_sign
    else:
        sign = private_key_jwt_sign
    audience = settings.assertions.audience or settings.token_url
    result = sign(key, settings.client_id, audience, **options)
    return result.decode() if isinstance(result, bytes) else str(result)


def build_request(
    dialect: Dialect,
    settings: ClientSettings,
    now: float,
    *,
    refresh_token: str | None = None,
    client_assertion: str | None = None,
) -> TokenRequest:
    """The token request for ``settings``; a refresh-token grant when one is given.

    ``client_assertion`` is what the settings' assertion source gave for this
    request: it is sent as it is, in place of any other client authentication.
    """
    fields: dict[str, str] = {}
    headers = list(dialect.headers)
    if refresh_token is not None:
        fields.update(grant_type="refresh_token", refresh_token=refresh_token)
    elif dialect.grant_type is not None:
        fields["grant_type"] = dialect.grant_type
    url = settings.token_url
    if (settings.grant_type_in or dialect.grant_type_in) == "query" and "grant_type" in fields:
        grant = urlencode({"grant_type": fields.pop("grant_type")})
        url = f"{url}{'&' if '?' in url else '?'}{grant}"
    method = settings.auth_method
    if client_assertion is not None:
        fields["client_id"] = settings.client_id
        fields["client_assertion_type"] = ASSERTION_TYPE
        fields["client_assertion"] = client_assertion
    elif method == "client_secret_basic":
        headers.append(("Authorization", _basic(settings.client_id, settings.client_secret or "")))
    elif method in ("client_secret_post", "client_secret_json"):
        fields[dialect.id_field] = settings.client_id
        fields[dialect.secret_field] = settings.client_secret or ""
    elif method in CERTIFICATE_METHODS:
        fields["client_id"] = settings.client_id  # RFC 8705 §2: the certificate is the proof
    else:
        fields["client_id"] = settings.client_id
        fields["client_assertion_type"] = ASSERTION_TYPE
        fields["client_assertion"] = _assertion(settings, now)
    if settings.scope and refresh_token is None:
        fields["scope"] = settings.scope
    if refresh_token is None:
        fields.update(settings.extra)
    if method == "client_secret_json" or (settings.body_format or dialect.body_format) == "json":
        headers.append(("Content-Type", "application/json"))
        body = json.dumps(fields).encode()
    else:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = urlencode(fields).encode()
    return TokenRequest(url, tuple(headers), body)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (RFC 9110: delay-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), 3600.0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _decode(headers: Mapping[str, str], body: bytes) -> dict[str, object] | None:
    """The body as a JSON object (or form, when the server says so); ``None`` if neither."""
    content_type = (_header(headers, "Content-Type") or "").lower()
    try:
        text = body[:MAX_BODY_BYTES].decode("utf-8")
        if "application/x-www-form-urlencoded" in content_type:
            return dict(parse_qsl(text, keep_blank_values=True))
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _text(payload: Mapping[str, object], name: str) -> str:
    value = payload.get(name)
    return excerpt(value, 300) if isinstance(value, str) else ""


def _rejected(dialect: Dialect, url: str, status: int, payload: Mapping[str, object]) -> Exception:
    error = _text(payload, "error")
    description = _text(payload, "error_description") or _text(payload, "message")
    label = f"{error}: {description}" if error and description else error or description
    hint = _HINTS.get(error, "Check the client id, secret and scope.")
    if error in ("", "invalid_client", "unauthorized_client") and dialect.rejected_hint:
        hint = f"{hint} {dialect.rejected_hint}"
    return CredentialsRejectedError(
        f"The token endpoint {url} refused the request (HTTP {status}"
        + (f", {label}" if label else "")
        + f"). {hint}",
        token_url=url,
        error=error,
        error_description=description,
        error_uri=_text(payload, "error_uri"),
        status_code=status,
    )


def _failure(
    url: str, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> Exception:
    retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
    text = excerpt(body)
    if 300 <= status < 400:
        where = _header(headers, "Location")
        target = f"to {excerpt(where, 120)}" if where else "elsewhere"
        advice = (
            f"It redirects {target}; chaveiro never sends credentials anywhere but token_url."
            " Set token_url to the final address."
        )
    elif status in (404, 405, 410, 501):
        advice = (
            "The URL or the method looks wrong: check token_url (some servers insist on a"
            " trailing slash) and that the endpoint takes a POST."
        )
    elif status == 403:
        advice = (
            "It forbids this client. Servers such as Glewlwyd answer so, with no explanation,"
            " when the client authentication fails: check the client id, the secret (or key)"
            " and auth_method. If they are right, an allow-list or firewall in front of the"
            " endpoint may refuse this machine."
        )
    elif status == 429:
        advice = "It is rate limiting this client: chaveiro waits before asking again."
    elif status >= 500:
        advice = "The provider is failing: chaveiro retries later; check its status page."
    else:
        advice = "Check token_url and the request format for this provider."
    detail = f": {text}" if text else ""
    return TokenEndpointError(
        f"The token endpoint {url} answered HTTP {status}{detail}. {advice}",
        token_url=url,
        status_code=status,
        retry_after=retry_after,
        body_excerpt=text,
    )


def parse_response(
    dialect: Dialect,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    secrets: Iterable[str] = (),
    token_types: tuple[str, ...] = ("Bearer",),
) -> Token:
    """A token from a token endpoint's answer, or the typed error it amounts to.

    ``secrets`` are what the request carried (the client secret, a refresh token, a supplied
    client assertion).
    The answer is parsed as it came; should the provider echo one of them, it is cut
    out of what the error message and the log records show, never out of what is read.
    ``token_types``: the ``token_type`` answers accepted (``DPoP`` when the request
    carried a DPoP proof); the token keeps the accepted spelling.
    """
    with hiding(secrets):
        return _parse(dialect, url, status, headers, body, now, token_types)


def _parse(
    dialect: Dialect,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    token_types: tuple[str, ...],
) -> Token:
    payload = _decode(headers, body)
    if not 200 <= status < 300:
        code = payload.get("error") if payload is not None else None
        code = code if isinstance(code, str) else None
        # RFC 6749 §5.2: an OAuth error answer (400 with an error code; 401 when the client
        # failed to authenticate). Any other status is the endpoint's failure, not a verdict.
        if status == 401 or (status == 400 and code) or (status == 403 and code in _HINTS):
            raise _rejected(dialect, url, status, payload or {})
        raise _failure(url, status, headers, body, now)
    if payload is None:
        raise InvalidTokenResponseError(
            f"The token endpoint {url} answered HTTP {status} with a body that is not a JSON"
            f" object ({excerpt(body, 80) or 'empty'}). Check token_url: it may point to a web"
            " page instead of the token endpoint.",
            token_url=url,
        )
    if isinstance(payload.get("error"), str):
        raise _rejected(dialect, url, status, payload)
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        present = ", ".join(sorted(excerpt(str(k), 30) for k in payload)[:10]) or "none"
        raise InvalidTokenResponseError(
            f"The token endpoint {url} answered without an access_token (fields present:"
            f" {present}). Check token_url and that this provider is the right one.",
            token_url=url,
        )
    if not _HEADER_SAFE.fullmatch(access_token.strip()):
        raise InvalidTokenResponseError(
            f"The token endpoint {url} issued an access token with characters that cannot be"
            " sent in an Authorization header (spaces, control or non-ASCII characters)."
            " Check token_url and that this provider is the right one.",
            token_url=url,
        )
    given = payload.get("token_type", "Bearer")
    token_type = _TOKEN_TYPES.get(given.lower()) if isinstance(given, str) else None
    if token_type not in token_types:
        if token_type == "Bearer":
            raise DPoPNotSupportedError(_NOT_DPOP.format(url=url), token_url=url)
        turn_on = " (DPoP: pass dpop_key=)" if token_type == "DPoP" else ""
        raise InvalidTokenResponseError(
            f"The token endpoint {url} issued a token of type {excerpt(str(given), 30)!r};"
            f" chaveiro was set to send {' or '.join(token_types)} tokens{turn_on}.",
            token_url=url,
        )
    assert token_type is not None
    provider_expiry = dialect.expiry_field(payload, now) if dialect.expiry_field else None
    expires_at = choose_expiry(
        now,
        expires_in=payload.get("expires_in"),
        provider_expires_at=provider_expiry,
        access_token=access_token,
    )
    refresh = payload.get("refresh_token")
    refresh_in = payload.get("refresh_expires_in")
    refresh_expires_at = None
    if isinstance(refresh_in, int | float) and not isinstance(refresh_in, bool) and refresh_in > 0:
        refresh_expires_at = now + min(refresh_in, 7 * 24 * 3600.0)
    scope = payload.get("scope")
    return Token(
        access_token=access_token.strip(),
        expires_at=expires_at,
        issued_at=now,
        token_type=token_type,
        scope=normalize_scope(scope) if isinstance(scope, str) else None,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        refresh_expires_at=refresh_expires_at,
    )
