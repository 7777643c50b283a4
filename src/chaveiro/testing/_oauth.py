"""The generic RFC 6749 dialect: every client authentication method, strictly checked.

Secrets (Basic, post, JSON body), client assertions (RFC 7523, verified with
joserfc) and client certificates (RFC 8705 §2: ``tls_client_auth`` and
``self_signed_tls_client_auth``). Over mTLS a token is bound to the client's
certificate (RFC 8705 §3) whatever the authentication method.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, RSAKey

from chaveiro.testing._federation import federated_client, is_federated
from chaveiro.testing._wire import (
    BASIC_CHALLENGE,
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
    from chaveiro.testing._registry import Client
    from chaveiro.testing._server import FakeTokenServer as _Server

__all__ = ["oauth_token", "verify_assertion"]

_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RFC10070_TYP = "client-authentication+jwt"
_ACCEPTED_TYPS = frozenset({_RFC10070_TYP, "jwt"})
"""``typ`` values of a client assertion (RFC 8725 §3.11: lowercase, ``application/`` optional);
another type (``at+jwt``, say) is a token of another kind, replayed."""
_ASSERTION_ALGS = {
    "HS256": "client_secret_jwt",
    "RS256": "private_key_jwt",
    "ES256": "private_key_jwt",
}


def _assertion_key(client: Client, alg: str) -> OctKey | RSAKey | ECKey | None:
    if alg == "HS256":
        # Built directly: import_key() warns about short secrets, and tests use short ones.
        raw = (client.secret or "").encode()
        return OctKey(raw, raw) if raw else None
    wanted = RSAKey if alg == "RS256" else ECKey
    return client.public_key if isinstance(client.public_key, wanted) else None


def _typ(header: dict[str, object]) -> str | None:
    typ = header.get("typ")
    if typ is None:
        return None
    text = str(typ).lower()
    return text.removeprefix("application/")


def _audience(srv: _Server, aud: object, typ: str | None, token_url: str) -> None:
    """RFC 10070: one audience, the issuer; the token endpoint too unless strict."""
    if isinstance(aud, list) and len(aud) == 1 and not srv.strict_assertions:
        aud = aud[0]
    accepted = {srv.issuer} if srv.strict_assertions else {srv.issuer, token_url}
    if not isinstance(aud, str) or aud not in accepted:
        raise DialectError(401, desc="client_assertion aud must be the issuer, as one string")
    if srv.strict_assertions and typ != _RFC10070_TYP:
        raise DialectError(401, desc=f"client_assertion typ must be {_RFC10070_TYP}")


def verify_assertion(srv: _Server, req: RecordedRequest, params: dict[str, str]) -> tuple[str, str]:
    if params.get("client_assertion_type") != _JWT_BEARER:
        raise DialectError(400, "invalid_request", "client_assertion_type must be jwt-bearer")
    assertion = params["client_assertion"]
    trusted = is_federated(srv, assertion)
    if trusted is not None:
        return federated_client(srv, trusted, assertion, params.get("client_id", "")), (
            "private_key_jwt"
        )
    try:
        unverified = jws.extract_compact(assertion.encode())
        header = dict(unverified.headers())
        alg = str(header.get("alg"))
        client_id = json.loads(unverified.payload).get("iss")  # only to find the key
    except (JoseError, ValueError, TypeError, AttributeError, RecursionError):
        raise DialectError(401, desc="malformed client_assertion") from None
    typ = _typ(header)
    if typ is not None and typ not in _ACCEPTED_TYPS:
        raise DialectError(401, desc=f"client_assertion typ {typ!r} is not a client assertion")
    client = srv._client(client_id) if isinstance(client_id, str) else None
    key = None if client is None or alg not in _ASSERTION_ALGS else _assertion_key(client, alg)
    bad_signature = DialectError(401, desc="client_assertion signature is not valid")
    if key is None:
        raise bad_signature
    try:
        claims = jwt.decode(assertion, key, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError):
        raise bad_signature from None
    assert isinstance(client_id, str)
    registry = jwt.JWTClaimsRegistry(
        leeway=0,
        iss={"essential": True, "value": client_id},
        sub={"essential": True, "value": client_id},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError):
        raise DialectError(401, desc="client_assertion claims are not acceptable") from None
    _audience(srv, claims.get("aud"), typ, srv.url + req.path)
    if params.get("client_id", client_id) != client_id or not srv._fresh_jti(
        client_id, claims.get("jti")
    ):
        raise DialectError(401, desc="client_assertion claims are not acceptable")
    return client_id, _ASSERTION_ALGS[alg]


def _by_certificate(srv: _Server, req: RecordedRequest, params: dict[str, str]) -> tuple[str, str]:
    """RFC 8705 §2: the client named in ``client_id`` proves itself with its certificate."""
    client_id = params.get("client_id", "")
    client = srv._client(client_id)
    if client is None or client.cert is None:
        raise DialectError(401, desc="client authentication is required")
    if req.client_cert is None:
        raise DialectError(401, desc="this client authenticates with a TLS client certificate")
    if not client.cert.matches(req.client_cert):
        raise DialectError(401, desc="the client certificate does not match this client")
    return client_id, client.cert.method


def _authenticate(srv: _Server, req: RecordedRequest, params: dict[str, str]) -> str:
    try:
        credentials = basic(req)
    except ValueError:
        raise DialectError(headers=BASIC_CHALLENGE) from None
    if sum([credentials is not None, "client_secret" in params, "client_assertion" in params]) > 1:
        raise DialectError(400, "invalid_request", "more than one client authentication method")
    if credentials is not None:
        client_id, method = credentials[0], "client_secret_basic"
        if params.get("client_id", client_id) != client_id:
            raise DialectError(400, "invalid_request", "client_id differs from Basic credentials")
        if srv._client(*credentials) is None:
            raise DialectError(headers=BASIC_CHALLENGE)
    elif "client_secret" in params:
        client_id, method = params.get("client_id", ""), "client_secret_post"
        if srv._client(client_id, params["client_secret"]) is None:
            raise DialectError()
    elif "client_assertion" in params:
        client_id, method = verify_assertion(srv, req, params)
    else:
        client_id, method = _by_certificate(srv, req, params)
    if method not in srv.auth_methods_supported:
        raise DialectError(401, desc=f"{method} is not enabled on this server")
    return client_id


def _grant_type(req: RecordedRequest, params: dict[str, str]) -> str | None:
    """``grant_type`` from the body, else from the query string (as Santander sends it)."""
    in_query = [v for k, v in parse_qsl(req.query) if k == "grant_type"]
    if len(in_query) > 1 or (in_query and params.get("grant_type", in_query[0]) != in_query[0]):
        raise DialectError(400, "invalid_request", "grant_type is given twice")
    return params.get("grant_type") or (in_query[0] if in_query else None)


def oauth_token(srv: _Server, req: RecordedRequest) -> Response:
    obj = json_object(req)
    strings = obj is not None and all(isinstance(v, str) for v in obj.values())
    params = form(req) or (obj if strings else None)
    if params is None:
        raise DialectError(400, "invalid_request", "send a form, or a JSON object of strings")
    grant = _grant_type(req, params)
    if grant is None:
        raise DialectError(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        raise DialectError(400, "unsupported_grant_type", f"grant_type {grant!r} not supported")
    client_id = _authenticate(srv, req, params)
    wanted = scopes(params.get("scope"))
    if not srv._scopes_allowed(client_id, wanted):
        raise DialectError(400, "invalid_scope", "requested scope is not allowed")
    aud = params.get("audience") or params.get("resource") or srv.api_url("")
    token, lifetime = srv._issue(
        client_id, " ".join(wanted), aud, grant, bound_to=srv._binding(req)
    )
    body = {"access_token": token, "token_type": "Bearer", "expires_in": num(lifetime)}
    return json_response(200, {**body, "scope": " ".join(wanted)} if wanted else body, NO_STORE)
