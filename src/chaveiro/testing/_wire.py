"""What the fake server's rooms pass around: requests as seen, answers, and body readers."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

__all__ = ["RecordedRequest"]

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="fake"'}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lowercase.

    ``client_cert`` is the DER of the certificate the client presented in the TLS
    handshake (``None`` without one); ``client_cert_thumbprint`` its RFC 8705
    ``x5t#S256`` (base64url SHA-256), as bound into tokens.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""
    dialect: str | None = None
    realm: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # form/JSON body fields, best effort
    client_cert: bytes | None = field(default=None, repr=False)
    dpop_jkt: str | None = None
    """The thumbprint of the key of the request's DPoP proof, once the server checked it."""

    @property
    def client_cert_thumbprint(self) -> str | None:
        """The presented certificate's ``x5t#S256``, or ``None`` without one."""
        return None if self.client_cert is None else thumbprint(self.client_cert)


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (unpadded) SHA-256 of the certificate's DER."""
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class DialectError(Exception):
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


def num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def json_response(status: int, obj: object, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), headers=dict(headers or {}))


def media_type(req: RecordedRequest) -> str:
    return req.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def form(req: RecordedRequest) -> dict[str, str] | None:
    """Non-empty form fields; None unless a valid UTF-8 form without repeated names."""
    if media_type(req) != FORM:
        return None
    try:
        pairs = parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    if len({name for name, _ in pairs}) != len(pairs):
        return None
    return {name: value for name, value in pairs if value}


def json_object(req: RecordedRequest) -> dict[str, Any] | None:
    if media_type(req) != "application/json":
        return None
    try:
        obj = json.loads(req.body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def fields(req: RecordedRequest) -> dict[str, str]:
    obj = json_object(req) or {}
    as_json = {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    return form(req) or as_json


def basic(req: RecordedRequest) -> tuple[str, str] | None:
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


def scopes(value: str | None) -> list[str]:
    return list(dict.fromkeys((value or "").split()))
