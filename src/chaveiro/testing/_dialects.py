"""The provider dialects of the fake server: StackSpot, Acesso Cidadão, Bitize, Score Positivo.

Each is strict in the way the real provider is, and shapes its errors in that
provider's own way. ``ROUTES`` maps a dialect's name to its route and handler.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from chaveiro.testing._knobs import rfc6749_shape
from chaveiro.testing._oauth import oauth_token, verify_assertion
from chaveiro.testing._wire import (
    FORM,
    NO_STORE,
    DialectError,
    RecordedRequest,
    Response,
    basic,
    form,
    json_object,
    json_response,
    num,
    scopes,
)

if TYPE_CHECKING:
    from chaveiro.testing._server import FakeTokenServer as _Server

__all__ = ["BITIZE_FORMATS", "ROUTES", "BitizeExpiryFormat", "Dialect"]

BitizeExpiryFormat = Literal["iso_z", "iso_offset", "iso_naive", "space", "br", "garbage"]
_KEYCLOAK_SCOPE = "attributes email profile roles"
_SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def _stackspot_token(srv: _Server, req: RecordedRequest) -> Response:
    params = form(req)
    if params is None:
        raise DialectError(400, "invalid_request", "Content-Type must be " + FORM)
    try:
        credentials = basic(req)
    except ValueError:
        raise DialectError() from None
    if "client_assertion" in params and credentials is None:  # Signed JWT, federated too
        client_id, _ = verify_assertion(srv, req, params)
    else:
        client_id, secret = credentials or (
            params.get("client_id", ""),
            params.get("client_secret", ""),
        )
        known = srv._client(client_id, secret)
        if params.get("client_id", client_id) != client_id or known is None:
            raise DialectError()
    grant = params.get("grant_type")
    if grant == "client_credentials":
        if not srv._scopes_allowed(client_id, scopes(params.get("scope"))):
            raise DialectError(400, "invalid_scope", "Invalid scopes: " + params["scope"])
        scope = " ".join(scopes(_KEYCLOAK_SCOPE + " " + params.get("scope", "")))
    elif grant == "refresh_token":
        scope = srv._redeem_refresh(client_id, params.get("refresh_token", ""))
    elif grant is None:
        raise DialectError(400, "invalid_request", "Missing form parameter: grant_type")
    else:
        raise DialectError(400, "unsupported_grant_type", "Unsupported grant_type")
    token, lifetime = srv._issue(
        client_id, scope, srv.api_url(""), grant, bound_to=srv._binding(req)
    )
    refresh, refresh_lifetime = srv._issue_refresh(client_id, scope)
    body = {
        "access_token": token,
        "expires_in": num(lifetime),
        "refresh_expires_in": num(refresh_lifetime),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": str(uuid.uuid4()),
        "scope": scope,
    }
    return json_response(200, body, NO_STORE)


def _cidadao_token(srv: _Server, req: RecordedRequest) -> Response:
    params = form(req)
    if params is None:
        raise DialectError(400, "invalid_request")
    credentials = None
    with contextlib.suppress(ValueError):
        credentials = basic(req)
    if credentials is None or "client_secret" in params or srv._client(*credentials) is None:
        raise DialectError()
    grant = params.get("grant_type")
    if grant != "client_credentials":
        raise DialectError(400, "invalid_request" if grant is None else "unsupported_grant_type")
    wanted = scopes(params.get("scope"))
    if not wanted or not srv._scopes_allowed(credentials[0], wanted):
        raise DialectError(400, "invalid_scope")
    bound = srv._binding(req)
    token, lifetime = srv._issue(
        credentials[0], " ".join(wanted), srv.api_url(""), grant, bound_to=bound
    )
    body = {"access_token": token, "expires_in": num(lifetime), "token_type": "Bearer"}
    return json_response(200, {**body, "scope": " ".join(wanted)}, NO_STORE)


def _sao_paulo(pattern: str) -> Callable[[float], str]:
    return lambda t: datetime.fromtimestamp(t, _SAO_PAULO).strftime(pattern)


BITIZE_FORMATS: dict[str, Callable[[float], str]] = {
    "iso_z": lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso_offset": lambda t: datetime.fromtimestamp(t, _SAO_PAULO).isoformat(timespec="seconds"),
    "iso_naive": _sao_paulo("%Y-%m-%dT%H:%M:%S"),
    "space": _sao_paulo("%Y-%m-%d %H:%M:%S"),
    "br": _sao_paulo("%d/%m/%Y %H:%M:%S"),
    "garbage": lambda t: "amanhã",
}


def _bitize_token(srv: _Server, req: RecordedRequest) -> Response:
    obj = json_object(req)
    if obj is None:
        raise DialectError(400, desc="Send a JSON object with Content-Type: application/json")
    key, secret = obj.get("consumer_key"), obj.get("secret_key")
    if set(obj) != {"consumer_key", "secret_key"}:
        raise DialectError(400, desc="Body must have exactly consumer_key and secret_key")
    if not isinstance(key, str) or not isinstance(secret, str):
        raise DialectError(400, desc="consumer_key and secret_key must be strings")
    if srv._client(key, secret) is None:
        raise DialectError()
    token, _ = srv._issue(
        key,
        "",
        srv.api_url(""),
        "client_credentials",
        whole_seconds=True,
        bound_to=srv._binding(req),
    )
    refresh, _ = srv._issue_refresh(key, "", whole_seconds=True)
    fmt = BITIZE_FORMATS[srv.bitize_expiry_format]
    body = {"access_token": token, "refresh_token": refresh}
    body["expiration_access_token"] = fmt(srv._expires_at(token))
    body["expiration_refresh_token"] = fmt(srv._expires_at(refresh))
    return json_response(200, body)


def _scorepositivo_token(srv: _Server, req: RecordedRequest) -> Response:
    obj = json_object(req)
    if obj is None or "json" not in req.headers.get("accept", "").lower():
        msg = "Send a JSON body with Content-Type and Accept: application/json"
        raise DialectError(400, "invalid_request", msg)
    grant, client_id, secret = (obj.get(k) for k in ("grant_type", "client_id", "client_secret"))
    if not (isinstance(grant, str) and isinstance(client_id, str) and isinstance(secret, str)):
        msg = "The request is missing a required parameter or includes an invalid parameter value."
        raise DialectError(400, "invalid_request", msg)
    if grant != "client_credentials":
        msg = "The authorization grant type is not supported by the authorization server."
        raise DialectError(400, "unsupported_grant_type", msg)
    if srv._client(client_id, secret) is None:
        raise DialectError()
    token, lifetime = srv._issue(client_id, "", srv.api_url(""), grant, bound_to=srv._binding(req))
    body = {"token_type": "Bearer", "expires_in": num(lifetime), "access_token": token}
    return json_response(200, body)


@dataclass(frozen=True)
class Dialect:
    """Where a dialect listens, how it answers, and how it shapes a rejection."""

    route: re.Pattern[str]
    handle: Callable[[_Server, RecordedRequest], Response]
    reject_status: int
    reject_desc: str
    shape: Callable[[str, str], dict[str, str]] = rfc6749_shape
    dpop: bool = False
    """Supports DPoP (with ``FakeTokenServer(dpop=True)``); the others ignore proofs."""

    def render(self, exc: DialectError) -> Response:
        status, desc = (
            (exc.status, exc.desc) if exc.status else (self.reject_status, self.reject_desc)
        )
        return json_response(status, self.shape(exc.error, desc), exc.headers)


ROUTES: dict[str, Dialect] = {
    "oauth": Dialect(
        re.compile(r"/oauth2/token"), oauth_token, 401, "Client authentication failed", dpop=True
    ),
    "stackspot": Dialect(
        re.compile(r"/(?P<realm>[^/]+)/oidc/oauth/token"),
        _stackspot_token,
        401,
        "Invalid client or Invalid client credentials",
        dpop=True,  # Keycloak 26.4 and later
    ),
    "cidadao": Dialect(
        re.compile(r"/is/connect/token"), _cidadao_token, 400, "", lambda e, d: {"error": e}
    ),
    "bitize": Dialect(
        re.compile(r"/auth"), _bitize_token, 401, "Unauthorized", lambda e, d: {"message": d}
    ),
    "entra": Dialect(
        re.compile(r"/(?P<realm>[^/]+)/oauth2/v2\.0/token"),
        oauth_token,
        401,
        "Client authentication failed",
    ),
    "scorepositivo": Dialect(
        re.compile(r"/oauth/token"),
        _scorepositivo_token,
        401,
        "Client authentication failed",
        lambda e, d: {"error": e, "error_description": d, "message": d},
    ),
}
