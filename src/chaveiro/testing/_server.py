"""A fake OAuth 2.0 token provider and protected API, served on 127.0.0.1 only."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload
from urllib.parse import parse_qs, parse_qsl, unquote_plus
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "DIALECTS",
    "BitizeExpiryFormat",
    "Failure",
    "FailureKind",
    "FakeTokenServer",
    "RecordedRequest",
]

DIALECTS = ("oauth", "stackspot", "cidadao", "bitize", "scorepositivo")
FailureKind = Literal["status", "html", "malformed", "missing_token", "reject", "slow", "drop"]
BitizeExpiryFormat = Literal["iso_z", "iso_offset", "iso_naive", "space", "br", "garbage"]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)
_MAX_BODY = 1024 * 1024
_MAX_DRAIN = 16 * _MAX_BODY  # read (and drop) this much of a too-large body before answering 413
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="fake"'}
_FORM = "application/x-www-form-urlencoded"
_KEYCLOAK_SCOPE = "attributes email profile roles"
_SAO_PAULO = ZoneInfo("America/Sao_Paulo")


@dataclass(frozen=True)
class Failure:
    """A scripted misbehaviour of the token endpoints; build one with the classmethods."""

    kind: FailureKind
    status_code: int = 200
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def status(cls, code: int, *, retry_after: str | float | None = None) -> Failure:
        """Answer HTTP ``code`` (4xx/5xx) with a JSON error body."""
        if not 400 <= code <= 599:
            raise ValueError("Failure.status needs a 4xx or 5xx code")
        return cls("status", code, _retry_after(retry_after))

    @classmethod
    def too_many(cls, *, retry_after: str | float | None = None) -> Failure:
        """Answer 429 Too Many Requests."""
        return cls.status(429, retry_after=retry_after)

    @classmethod
    def html(cls, code: int = 500, *, retry_after: str | float | None = None) -> Failure:
        """Answer an HTML error page (``text/html``), as a proxy would."""
        return cls("html", code, _retry_after(retry_after))

    @classmethod
    def malformed(cls) -> Failure:
        """Answer 200 with a body that is not valid JSON."""
        return cls("malformed")

    @classmethod
    def missing_token(cls) -> Failure:
        """Answer 200 with JSON that has no ``access_token``."""
        return cls("missing_token")

    @classmethod
    def reject(cls) -> Failure:
        """Answer ``invalid_client`` in the dialect's own error shape."""
        return cls("reject")

    @classmethod
    def slow(cls, seconds: float) -> Failure:
        """Wait ``seconds``, then answer normally."""
        return cls("slow", seconds=seconds)

    @classmethod
    def drop(cls) -> Failure:
        """Close the connection without answering."""
        return cls("drop")


def _retry_after(value: str | float | None) -> str | None:
    return value if value is None or isinstance(value, str) else str(_num(value))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lowercase."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""
    dialect: str | None = None
    realm: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # form/JSON body fields, best effort


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass(frozen=True)
class _Client:
    secret: str
    scopes: frozenset[str] | None
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None


@dataclass
class _Issued:
    client_id: str
    expires_at: float
    kind: Literal["access", "refresh"]
    scope: str
    revoked: bool = False


class _DialectError(Exception):
    """An error answer, shaped by the dialect; status 0 is the dialect's invalid_client."""

    def __init__(
        self,
        status: int = 0,
        error: str = "invalid_client",
        desc: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.desc, self.headers = status, error, desc, headers or {}


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _json(status: int, obj: object, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode(), headers=dict(headers or {}))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _sign_hs256(claims: dict[str, Any], key: bytes) -> str:
    head = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def _media_type(req: RecordedRequest) -> str:
    return req.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _form(req: RecordedRequest) -> dict[str, str] | None:
    """Non-empty form fields; None unless a valid UTF-8 form without repeated names."""
    if _media_type(req) != _FORM:
        return None
    try:
        pairs = parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    if len({name for name, _ in pairs}) != len(pairs):
        return None
    return {name: value for name, value in pairs if value}


def _json_object(req: RecordedRequest) -> dict[str, Any] | None:
    if _media_type(req) != "application/json":
        return None
    try:
        obj = json.loads(req.body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _fields(req: RecordedRequest) -> dict[str, str]:
    obj = _json_object(req) or {}
    as_json = {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    return _form(req) or as_json


def _basic(req: RecordedRequest) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1 credentials; None without a header, ValueError when malformed."""
    header = req.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ValueError("not Basic")
    decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ValueError("no colon")
    return unquote_plus(client_id), unquote_plus(secret)


def _scopes(value: str | None) -> list[str]:
    return list(dict.fromkeys((value or "").split()))


# --- client assertions (RFC 7523) ----------------------------------------------------------------


def _verify_hs256(client: _Client, data: bytes, sig: bytes) -> bool:
    expected = hmac.new(client.secret.encode(), data, hashlib.sha256).digest()
    return hmac.compare_digest(expected, sig)


def _verify_rs256(client: _Client, data: bytes, sig: bytes) -> bool:
    if not isinstance(client.public_key, rsa.RSAPublicKey):
        return False
    try:
        client.public_key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _verify_es256(client: _Client, data: bytes, sig: bytes) -> bool:
    if not isinstance(client.public_key, ec.EllipticCurvePublicKey) or len(sig) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        client.public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


_ASSERTION_ALGS: dict[str, tuple[str, Callable[[_Client, bytes, bytes], bool]]] = {
    "HS256": ("client_secret_jwt", _verify_hs256),
    "RS256": ("private_key_jwt", _verify_rs256),
    "ES256": ("private_key_jwt", _verify_es256),
}


def _decode_jws(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    head, body, sig = token.split(".")  # ValueError unless exactly three parts
    header, claims = json.loads(_b64url_decode(head)), json.loads(_b64url_decode(body))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TypeError("JOSE header and claims must be objects")
    return header, claims, f"{head}.{body}".encode("ascii"), _b64url_decode(sig)


def _verify_assertion(srv: FakeTokenServer, params: dict[str, str]) -> tuple[str, str]:
    if params.get("client_assertion_type") != _JWT_BEARER:
        raise _DialectError(400, "invalid_request", "client_assertion_type must be jwt-bearer")
    try:
        header, claims, data, sig = _decode_jws(params["client_assertion"])
    except (ValueError, TypeError):
        raise _DialectError(401, desc="malformed client_assertion") from None
    client_id = claims.get("iss")
    client = srv._client(client_id) if isinstance(client_id, str) else None
    method, verify = _ASSERTION_ALGS.get(str(header.get("alg")), ("", None))
    if client is None or verify is None or not verify(client, data, sig):
        raise _DialectError(401, desc="client_assertion signature is not valid")
    aud, exp = claims.get("aud"), claims.get("exp")
    if (
        claims.get("sub") != client_id
        or params.get("client_id", client_id) != client_id
        or srv.oauth_token_url not in (aud if isinstance(aud, list) else [aud])
        or not isinstance(exp, int | float)
        or exp <= time.time()
        or not srv._fresh_jti(str(client_id), claims.get("jti"))
    ):
        raise _DialectError(401, desc="client_assertion claims are not acceptable")
    return str(client_id), method


# --- dialects -------------------------------------------------------------------------------------


def _oauth_authenticate(srv: FakeTokenServer, req: RecordedRequest, params: dict[str, str]) -> str:
    try:
        basic = _basic(req)
    except ValueError:
        raise _DialectError(headers=_BASIC_CHALLENGE) from None
    if sum([basic is not None, "client_secret" in params, "client_assertion" in params]) > 1:
        raise _DialectError(400, "invalid_request", "more than one client authentication method")
    if basic is not None:
        client_id, method = basic[0], "client_secret_basic"
        if params.get("client_id", client_id) != client_id:
            raise _DialectError(400, "invalid_request", "client_id differs from Basic credentials")
        if srv._client(*basic) is None:
            raise _DialectError(headers=_BASIC_CHALLENGE)
    elif "client_secret" in params:
        client_id, method = params.get("client_id", ""), "client_secret_post"
        if srv._client(client_id, params["client_secret"]) is None:
            raise _DialectError()
    elif "client_assertion" in params:
        client_id, method = _verify_assertion(srv, params)
    else:
        raise _DialectError(401, desc="client authentication is required")
    if method not in srv.auth_methods_supported:
        raise _DialectError(401, desc=f"{method} is not enabled on this server")
    return client_id


def _oauth_token(srv: FakeTokenServer, req: RecordedRequest) -> _Response:
    obj = _json_object(req)
    strings = obj is not None and all(isinstance(v, str) for v in obj.values())
    params = _form(req) or (obj if strings else None)
    if params is None:
        raise _DialectError(400, "invalid_request", "send a form, or a JSON object of strings")
    grant = params.get("grant_type")
    if grant is None:
        raise _DialectError(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        raise _DialectError(400, "unsupported_grant_type", f"grant_type {grant!r} not supported")
    client_id = _oauth_authenticate(srv, req, params)
    scopes = _scopes(params.get("scope"))
    if not srv._scopes_allowed(client_id, scopes):
        raise _DialectError(400, "invalid_scope", "requested scope is not allowed")
    aud = params.get("audience") or params.get("resource") or srv.api_url("")
    token, lifetime = srv._issue(client_id, " ".join(scopes), aud, grant)
    body = {"access_token": token, "token_type": "Bearer", "expires_in": _num(lifetime)}
    return _json(200, {**body, "scope": " ".join(scopes)} if scopes else body, _NO_STORE)


def _stackspot_token(srv: FakeTokenServer, req: RecordedRequest) -> _Response:
    params = _form(req)
    if params is None:
        raise _DialectError(400, "invalid_request", "Content-Type must be " + _FORM)
    try:
        basic = _basic(req)
    except ValueError:
        raise _DialectError() from None
    client_id, secret = basic or (params.get("client_id", ""), params.get("client_secret", ""))
    if params.get("client_id", client_id) != client_id or srv._client(client_id, secret) is None:
        raise _DialectError()
    grant = params.get("grant_type")
    if grant == "client_credentials":
        if not srv._scopes_allowed(client_id, _scopes(params.get("scope"))):
            raise _DialectError(400, "invalid_scope", "Invalid scopes: " + params["scope"])
        scope = " ".join(_scopes(_KEYCLOAK_SCOPE + " " + params.get("scope", "")))
    elif grant == "refresh_token":
        scope = srv._redeem_refresh(client_id, params.get("refresh_token", ""))
    elif grant is None:
        raise _DialectError(400, "invalid_request", "Missing form parameter: grant_type")
    else:
        raise _DialectError(400, "unsupported_grant_type", "Unsupported grant_type")
    token, lifetime = srv._issue(client_id, scope, srv.api_url(""), grant)
    refresh, refresh_lifetime = srv._issue_refresh(client_id, scope)
    body = {
        "access_token": token,
        "expires_in": _num(lifetime),
        "refresh_expires_in": _num(refresh_lifetime),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": str(uuid.uuid4()),
        "scope": scope,
    }
    return _json(200, body, _NO_STORE)


def _cidadao_token(srv: FakeTokenServer, req: RecordedRequest) -> _Response:
    params = _form(req)
    if params is None:
        raise _DialectError(400, "invalid_request")
    basic = None
    with contextlib.suppress(ValueError):
        basic = _basic(req)
    if basic is None or "client_secret" in params or srv._client(*basic) is None:
        raise _DialectError()
    grant = params.get("grant_type")
    if grant != "client_credentials":
        raise _DialectError(400, "invalid_request" if grant is None else "unsupported_grant_type")
    scopes = _scopes(params.get("scope"))
    if not scopes or not srv._scopes_allowed(basic[0], scopes):
        raise _DialectError(400, "invalid_scope")
    token, lifetime = srv._issue(basic[0], " ".join(scopes), srv.api_url(""), grant)
    body = {"access_token": token, "expires_in": _num(lifetime), "token_type": "Bearer"}
    return _json(200, {**body, "scope": " ".join(scopes)}, _NO_STORE)


def _sao_paulo(pattern: str) -> Callable[[float], str]:
    return lambda t: datetime.fromtimestamp(t, _SAO_PAULO).strftime(pattern)


_BITIZE_FORMATS: dict[str, Callable[[float], str]] = {
    "iso_z": lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso_offset": lambda t: datetime.fromtimestamp(t, _SAO_PAULO).isoformat(timespec="seconds"),
    "iso_naive": _sao_paulo("%Y-%m-%dT%H:%M:%S"),
    "space": _sao_paulo("%Y-%m-%d %H:%M:%S"),
    "br": _sao_paulo("%d/%m/%Y %H:%M:%S"),
    "garbage": lambda t: "amanhã",
}


def _bitize_token(srv: FakeTokenServer, req: RecordedRequest) -> _Response:
    obj = _json_object(req)
    if obj is None:
        raise _DialectError(400, desc="Send a JSON object with Content-Type: application/json")
    key, secret = obj.get("consumer_key"), obj.get("secret_key")
    if set(obj) != {"consumer_key", "secret_key"}:
        raise _DialectError(400, desc="Body must have exactly consumer_key and secret_key")
    if not isinstance(key, str) or not isinstance(secret, str):
        raise _DialectError(400, desc="consumer_key and secret_key must be strings")
    if srv._client(key, secret) is None:
        raise _DialectError()
    token, _ = srv._issue(key, "", srv.api_url(""), "client_credentials", whole_seconds=True)
    refresh, _ = srv._issue_refresh(key, "", whole_seconds=True)
    fmt = _BITIZE_FORMATS[srv.bitize_expiry_format]
    body = {"access_token": token, "refresh_token": refresh}
    body["expiration_access_token"] = fmt(srv._expires_at(token))
    body["expiration_refresh_token"] = fmt(srv._expires_at(refresh))
    return _json(200, body)


def _scorepositivo_token(srv: FakeTokenServer, req: RecordedRequest) -> _Response:
    obj = _json_object(req)
    if obj is None or "json" not in req.headers.get("accept", "").lower():
        msg = "Send a JSON body with Content-Type and Accept: application/json"
        raise _DialectError(400, "invalid_request", msg)
    grant, client_id, secret = (obj.get(k) for k in ("grant_type", "client_id", "client_secret"))
    if not (isinstance(grant, str) and isinstance(client_id, str) and isinstance(secret, str)):
        msg = "The request is missing a required parameter or includes an invalid parameter value."
        raise _DialectError(400, "invalid_request", msg)
    if grant != "client_credentials":
        msg = "The authorization grant type is not supported by the authorization server."
        raise _DialectError(400, "unsupported_grant_type", msg)
    if srv._client(client_id, secret) is None:
        raise _DialectError()
    token, lifetime = srv._issue(client_id, "", srv.api_url(""), grant)
    return _json(200, {"token_type": "Bearer", "expires_in": _num(lifetime), "access_token": token})


def _rfc6749_shape(error: str, desc: str) -> dict[str, str]:
    return {"error": error, "error_description": desc} if desc else {"error": error}


@dataclass(frozen=True)
class _Dialect:
    route: re.Pattern[str]
    handle: Callable[[FakeTokenServer, RecordedRequest], _Response]
    reject_status: int
    reject_desc: str
    shape: Callable[[str, str], dict[str, str]] = _rfc6749_shape

    def render(self, exc: _DialectError) -> _Response:
        status, desc = (
            (exc.status, exc.desc) if exc.status else (self.reject_status, self.reject_desc)
        )
        return _json(status, self.shape(exc.error, desc), exc.headers)


_DIALECTS: dict[str, _Dialect] = {
    "oauth": _Dialect(
        re.compile(r"/oauth2/token"), _oauth_token, 401, "Client authentication failed"
    ),
    "stackspot": _Dialect(
        re.compile(r"/(?P<realm>[^/]+)/oidc/oauth/token"),
        _stackspot_token,
        401,
        "Invalid client or Invalid client credentials",
    ),
    "cidadao": _Dialect(
        re.compile(r"/is/connect/token"), _cidadao_token, 400, "", lambda e, d: {"error": e}
    ),
    "bitize": _Dialect(
        re.compile(r"/auth"), _bitize_token, 401, "Unauthorized", lambda e, d: {"message": d}
    ),
    "scorepositivo": _Dialect(
        re.compile(r"/oauth/token"),
        _scorepositivo_token,
        401,
        "Client authentication failed",
        lambda e, d: {"error": e, "error_description": d, "message": d},
    ),
}


def _failure_response(failure: Failure, dialect: _Dialect) -> _Response:
    code = failure.status_code
    if failure.kind == "status":
        error = {429: "too_many_requests", 503: "temporarily_unavailable"}.get(code)
        resp = _json(code, _rfc6749_shape(error or "server_error", f"simulated HTTP {code}"))
    elif failure.kind == "html":
        page = f"<html><body><h1>{code} Error</h1><p>Simulated failure.</p></body></html>"
        resp = _Response(code, page.encode(), "text/html; charset=utf-8")
    elif failure.kind == "malformed":
        resp = _Response(200, b'{"access_token": "trunc')
    elif failure.kind == "missing_token":
        resp = _json(200, {"token_type": "Bearer", "expires_in": 3600})
    elif failure.kind == "reject":
        resp = dialect.render(_DialectError())
    else:
        resp = _Response(0, drop=True)
    if failure.retry_after is not None:
        resp.headers["Retry-After"] = failure.retry_after
    return resp


# --- thread-safe attributes -----------------------------------------------------------------------


class _Stat(Generic[_T]):
    """Read-only view of the server's ``_<name>``, copied under its lock."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> _Stat[_T]: ...
    @overload
    def __get__(self, obj: FakeTokenServer, owner: type) -> _T: ...
    def __get__(self, obj: FakeTokenServer | None, owner: type) -> _Stat[_T] | _T:
        if obj is None:
            return self
        with obj._lock:
            value: _T = copy.copy(getattr(obj, self.attr))
        return value


class _Knob(_Stat[_T]):
    """Like ``_Stat``, also settable (after ``check``)."""

    def __init__(self, check: Callable[[_T], bool] = lambda value: True) -> None:
        self.check = check

    def __set__(self, obj: FakeTokenServer, value: _T) -> None:
        if not self.check(value):
            raise ValueError(f"invalid {self.attr[1:]}: {value!r}")
        with obj._lock:
            setattr(obj, self.attr, copy.copy(value))


def _non_negative(value: float) -> bool:
    return value >= 0


# --- the server -----------------------------------------------------------------------------------


class FakeTokenServer:
    """Fake token provider + protected API on 127.0.0.1; use it as a context manager."""

    lifetime = _Knob[float](_non_negative)
    """Seconds new access tokens live (``expires_in`` and the JWT ``exp``)."""
    token_delay = _Knob[float](_non_negative)
    """Seconds every token request waits before being answered."""
    refresh_lifetime = _Knob[float | None](lambda v: v is None or v >= 0)
    """Seconds new refresh tokens live; None means ``lifetime + 1``."""
    bitize_expiry_format = _Knob[BitizeExpiryFormat](lambda v: v in _BITIZE_FORMATS)
    """How Bitize writes expiry times."""
    auth_methods_supported = _Knob[list[str]]()
    """Client auth methods advertised in discovery and accepted by the oauth dialect."""
    token_requests = _Stat[int]()
    """Token endpoint hits, failed ones included."""
    token_requests_by_dialect = _Stat[dict[str, int]]()
    """Token endpoint hits per dialect (keys: ``DIALECTS``)."""
    grants = _Stat[list[str]]()
    """``grant_type`` of every successful issue, in order."""
    api_requests = _Stat[int]()
    """Requests to ``/api/...``."""
    api_unauthorized = _Stat[int]()
    """API requests answered 401."""
    discovery_requests = _Stat[int]()
    """Requests to the OIDC discovery document."""
    issued_tokens = _Stat[list[str]]()
    """Every access and refresh token ever issued."""
    token_request_log = _Stat[list[RecordedRequest]]()
    """Every token endpoint request."""
    api_request_log = _Stat[list[RecordedRequest]]()
    """Every API request."""

    def __init__(
        self,
        *,
        lifetime: float = 3600.0,
        ssl_context: ssl.SSLContext | None = None,
        token_delay: float = 0.0,
        bitize_expiry_format: BitizeExpiryFormat = "iso_z",
        refresh_lifetime: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._ssl_context = ssl_context
        self._key = secrets.token_bytes(32)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        self._clients: dict[str, _Client] = {}
        self._tokens: dict[str, _Issued] = {}
        self._issued_tokens: list[str] = []
        self._jtis: set[tuple[str, str]] = set()
        self._failures: list[tuple[Failure, int | None]] = []
        self.lifetime, self.token_delay = lifetime, token_delay
        self.bitize_expiry_format, self.refresh_lifetime = bitize_expiry_format, refresh_lifetime
        self.auth_methods_supported = [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "private_key_jwt",
        ]
        self.reset_counters()

    def start(self) -> FakeTokenServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("FakeTokenServer is already running")
        self._httpd = _HTTPServer(self, self._ssl_context)
        scheme = "https" if self._ssl_context is not None else "http"
        self._url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.01,), name=self._url, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.close_connections()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeTokenServer:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with an ssl_context)."""
        if not self._url:
            raise RuntimeError("FakeTokenServer is not started")
        return self._url

    @property
    def issuer(self) -> str:
        """OIDC issuer; discovery lives at ``issuer + '/.well-known/openid-configuration'``."""
        return self.url

    @property
    def oauth_token_url(self) -> str:
        """Generic RFC 6749 token endpoint."""
        return self.url + "/oauth2/token"

    def stackspot_token_url(self, realm: str = "acme") -> str:
        """StackSpot (Keycloak) token endpoint of ``realm``."""
        return f"{self.url}/{realm}/oidc/oauth/token"

    @property
    def cidadao_token_url(self) -> str:
        """Acesso Cidadão (IdentityServer) token endpoint."""
        return self.url + "/is/connect/token"

    @property
    def bitize_token_url(self) -> str:
        """Bitize token endpoint."""
        return self.url + "/auth"

    @property
    def scorepositivo_token_url(self) -> str:
        """Score Positivo (Laravel Passport) token endpoint."""
        return self.url + "/oauth/token"

    def api_url(self, path: str = "/api/resource") -> str:
        """URL of the protected API; ``path`` should start with ``/api``."""
        return self.url + path

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        scopes: Iterable[str] | None = None,
        public_key_pem: bytes | None = None,
    ) -> None:
        """Register credentials valid in every dialect; ``scopes=None`` allows any scope."""
        key = None if public_key_pem is None else serialization.load_pem_public_key(public_key_pem)
        if key is not None and not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("public_key_pem must hold an RSA or EC public key")
        client = _Client(client_secret, None if scopes is None else frozenset(scopes), key)
        with self._lock:
            self._clients[client_id] = client

    def revoke_all(self, *, include_refresh: bool = True) -> None:
        """Make every token issued so far invalid (refresh tokens too, unless told not to)."""
        with self._lock:
            for issued in self._tokens.values():
                issued.revoked = issued.revoked or include_refresh or issued.kind == "access"

    def fail(self, failure: Failure, *, times: int | None = None) -> None:
        """Make the next ``times`` token requests fail (None: until cleared or replaced).

        Calls queue up in order; a new call replaces an unlimited failure at the queue's end.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            if self._failures and self._failures[-1][1] is None:
                self._failures.pop()
            self._failures.append((failure, times))

    def clear_failures(self) -> None:
        """Answer token requests normally again."""
        with self._lock:
            self._failures.clear()

    def reset_counters(self) -> None:
        """Zero the counters and empty ``grants`` and the request logs; tokens stay valid."""
        with self._lock:
            self._token_requests = self._api_requests = 0
            self._api_unauthorized = self._discovery_requests = 0
            self._token_requests_by_dialect = dict.fromkeys(DIALECTS, 0)
            self._grants: list[str] = []
            self._token_request_log: list[RecordedRequest] = []
            self._api_request_log: list[RecordedRequest] = []

    # --- helpers for the dialects

    def _client(self, client_id: str, secret: str | None = None) -> _Client | None:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or secret is None:
            return client
        return client if hmac.compare_digest(client.secret.encode(), secret.encode()) else None

    def _scopes_allowed(self, client_id: str, scopes: list[str]) -> bool:
        client = self._client(client_id)
        return client is not None and (client.scopes is None or client.scopes.issuperset(scopes))

    def _fresh_jti(self, client_id: str, jti: object) -> bool:
        with self._lock:
            if jti is not None and (client_id, str(jti)) in self._jtis:
                return False
            if jti is not None:
                self._jtis.add((client_id, str(jti)))
        return True

    def _remember(self, token: str, issued: _Issued, grant: str | None) -> str:
        with self._lock:
            self._tokens[token] = issued
            self._issued_tokens.append(token)
            if grant is not None:
                self._grants.append(grant)
        return token

    def _issue(
        self, client_id: str, scope: str, aud: str, grant: str, *, whole_seconds: bool = False
    ) -> tuple[str, float]:
        now, lifetime = time.time(), self.lifetime
        expires = math.floor(now + lifetime) if whole_seconds else now + lifetime
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": client_id,
            "client_id": client_id,
            "aud": aud,
        }
        claims |= {"exp": int(expires), "iat": int(now), "jti": secrets.token_urlsafe(16)}
        token = _sign_hs256({**claims, "scope": scope}, self._key)
        return self._remember(token, _Issued(client_id, expires, "access", scope), grant), lifetime

    def _issue_refresh(
        self, client_id: str, scope: str, *, whole_seconds: bool = False
    ) -> tuple[str, float]:
        lifetime = self.refresh_lifetime
        lifetime = self.lifetime + 1 if lifetime is None else lifetime
        expires = time.time() + lifetime
        expires = math.floor(expires) if whole_seconds else expires
        issued = _Issued(client_id, expires, "refresh", scope)
        return self._remember(secrets.token_urlsafe(32), issued, None), lifetime

    def _expires_at(self, token: str) -> float:
        with self._lock:
            return self._tokens[token].expires_at

    def _valid(self, token: str, kind: str) -> _Issued | None:
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued.kind != kind or issued.revoked:
            return None
        return issued if time.time() < issued.expires_at else None

    def _redeem_refresh(self, client_id: str, token: str) -> str:
        issued = self._valid(token, "refresh")
        if issued is None:
            raise _DialectError(400, "invalid_grant", "Token is not active")
        if issued.client_id != client_id:
            raise _DialectError(400, "invalid_grant", "Token client and authorized client differ")
        return issued.scope

    def _next_failure(self) -> Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure, remaining = self._failures[0]
            if remaining is not None and remaining <= 1:
                self._failures.pop(0)
            elif remaining is not None:
                self._failures[0] = (failure, remaining - 1)
            return failure

    # --- request handling

    def _dispatch(self, req: RecordedRequest) -> _Response:
        for name, dialect in _DIALECTS.items():
            match = dialect.route.fullmatch(req.path)
            if match is not None:
                realm = match.groupdict().get("realm")
                return self._token_endpoint(replace(req, dialect=name, realm=realm), dialect)
        if req.path == "/.well-known/openid-configuration":
            return self._discovery(req)
        if req.path == "/api" or req.path.startswith("/api/"):
            return self._api(req)
        return _json(404, {"error": "not_found", "path": req.path})

    def _token_endpoint(self, req: RecordedRequest, dialect: _Dialect) -> _Response:
        req = replace(req, fields=_fields(req))
        with self._lock:
            self._token_requests += 1
            self._token_requests_by_dialect[str(req.dialect)] += 1
            self._token_request_log.append(req)
        failure = self._next_failure()
        time.sleep(self.token_delay + (failure.seconds if failure is not None else 0.0))
        if failure is not None and failure.kind != "slow":
            return _failure_response(failure, dialect)
        if req.method != "POST":
            return _json(405, {"error": "invalid_request"}, {"Allow": "POST"})
        try:
            return dialect.handle(self, req)
        except _DialectError as exc:
            return dialect.render(exc)

    def _discovery(self, req: RecordedRequest) -> _Response:
        with self._lock:
            self._discovery_requests += 1
        if req.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed"}, {"Allow": "GET"})
        return _json(
            200,
            {
                "issuer": self.issuer,
                "token_endpoint": self.oauth_token_url,
                "token_endpoint_auth_methods_supported": self.auth_methods_supported,
                "grant_types_supported": ["client_credentials"],
            },
        )

    def _api(self, req: RecordedRequest) -> _Response:
        with self._lock:
            self._api_requests += 1
            self._api_request_log.append(req)
        query = {k: v[0] for k, v in parse_qs(req.query).items()}
        if req.path == "/api/redirect" and req.method in ("GET", "HEAD"):
            target = query.get("to", "")
            if not target:
                return _json(400, {"error": "missing ?to="})
            return _json(302, {"location": target}, {"Location": target})
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        issued = self._valid(token.strip(), "access") if scheme.lower() == "bearer" else None
        status = int(query["status"]) if query.get("status", "").isdigit() else 200
        if issued is None or status == 401:
            with self._lock:
                self._api_unauthorized += 1
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return _json(401, {"error": "invalid_token"}, challenge)
        if not 200 <= status <= 599 or status in (204, 304):
            return _json(400, {"error": "?status= must be 200-599, not 204 or 304"})
        body = {"ok": status < 400, "client_id": issued.client_id, "path": req.path}
        return _json(status, {**body, "method": req.method, "body_length": len(req.body)})


# --- HTTP plumbing --------------------------------------------------------------------------------


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = _json(status, {"error": message})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of hundreds of connections must not be dropped

    def __init__(self, app: FakeTokenServer, ssl_context: ssl.SSLContext | None) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        if ssl_context is not None:  # handshake later, in the connection's own thread
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is not news
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60.0
    wbufsize = 1 << 16  # headers and body leave in one send, flushed per request
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive connections
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` now, not when the buffered answer is flushed."""
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep stderr quiet."""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(exc.response)
            return
        path, _, query = self.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = RecordedRequest(self.command, path, headers, body, query)
        try:
            resp = self.server.app._dispatch(req)
        except Exception:  # noqa: BLE001 - a bug here must answer 500, not hang the client
            _log.exception("FakeTokenServer failed on %s %s", self.command, path)
            resp = _json(500, {"error": "fake server bug"})
        self._send(resp)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise _BodyError(501, "only chunked transfer encoding is supported")
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            raise _BodyError(400, "bad Content-Length")
        size = int(length)
        if size > _MAX_BODY:
            if size <= _MAX_DRAIN:
                self._read_exactly(size)  # so the client gets to read the 413, not a reset
            raise _BodyError(413, "body larger than 1 MiB")
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("client closed the connection mid-body")
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
                raise _BodyError(400, "bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > _MAX_DRAIN:
                raise _BodyError(413, "body larger than 1 MiB")
            chunk = self._read_exactly(size)
            chunks.append(chunk if total <= _MAX_BODY else b"")
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BodyError(400, "bad chunk terminator")
        for _ in range(100):  # trailer fields, up to the blank line
            if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                break
        if total > _MAX_BODY:
            raise _BodyError(413, "body larger than 1 MiB")
        return b"".join(chunks)

    def _send(self, resp: _Response) -> None:
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)
