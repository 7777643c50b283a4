"""The fake server's memory: registered clients, issued tokens, seen assertion ids.

``TokenRegistry`` is a base of ``FakeTokenServer``; the dialects call its
underscore methods. Everything it holds is guarded by the server's one lock.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, RSAKey

from chaveiro.testing._federation import trusted_issuer
from chaveiro.testing._tls import CertRule
from chaveiro.testing._wire import DialectError, RecordedRequest

if TYPE_CHECKING:
    from chaveiro.testing._federation import TrustedIssuer

__all__ = ["Binding", "Client", "Issued", "TokenRegistry", "public_key"]


@dataclass(frozen=True)
class Client:
    secret: str | None
    scopes: frozenset[str] | None
    public_key: RSAKey | ECKey | None = None
    cert: CertRule | None = None
    federated: tuple[str, str] | None = None
    """``(issuer, subject)`` of the workload tokens that authenticate this client."""


@dataclass
class Issued:
    client_id: str
    expires_at: float
    kind: Literal["access", "refresh"]
    scope: str
    revoked: bool = False
    bound_to: str | None = None
    """``x5t#S256`` of the certificate the token is bound to (RFC 8705 §3)."""
    jkt: str | None = None
    """Thumbprint of the DPoP key the token is bound to (RFC 9449 §6)."""


class Binding(NamedTuple):
    """What a token is bound to: a client certificate, a DPoP key, both, or neither."""

    cert: str | None = None
    jkt: str | None = None


def public_key(pem: bytes) -> RSAKey | ECKey:
    """An RSA or EC public key from PEM, for checking ``private_key_jwt`` assertions."""
    for key_type in (RSAKey, ECKey):
        try:
            key: RSAKey | ECKey = key_type.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            raise ValueError("public_key_pem must hold a public key, not a private one")
        return key
    raise ValueError("public_key_pem must hold an RSA or EC public key")


class TokenRegistry:
    """Clients, tokens and assertion ids of one fake server."""

    _lock: threading.Lock
    lifetime: float
    refresh_lifetime: float | None
    bind_tokens: bool

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _init_registry(self) -> None:
        self._signing_key = OctKey.import_key(secrets.token_bytes(32))
        self._clients: dict[str, Client] = {}
        self._tokens: dict[str, Issued] = {}
        self._issued_tokens: list[str] = []
        self._jtis: set[tuple[str, str]] = set()
        self._grants: list[str] = []
        self._trusted: dict[str, TrustedIssuer] = {}

    def _register(self, client_id: str, client: Client) -> None:
        with self._lock:
            self._clients[client_id] = client

    def _client(self, client_id: str, secret: str | None = None) -> Client | None:
        """The client; with ``secret``, only if it is that client's secret."""
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or secret is None:
            return client
        if client.secret is None:
            return None
        return client if hmac.compare_digest(client.secret.encode(), secret.encode()) else None

    def trust_issuer(
        self, issuer: str, jwks: Mapping[str, Any], *, audience: str | None = None
    ) -> None:
        """Accept client assertions that ``issuer`` signs with a key of ``jwks``.

        ``jwks`` is the issuer's public JSON Web Key Set: a ``WorkloadIssuer``'s
        ``jwks``, or a real one (``kubectl get --raw /openid/v1/jwks``). The
        assertions must carry ``audience`` in ``aud``: by default this server's
        issuer (Keycloak's rule); ``"api://AzureADTokenExchange"`` for Entra's.
        """
        trusted = trusted_issuer(issuer, jwks, audience)
        with self._lock:
            self._trusted[trusted.issuer] = trusted

    def _trusted_issuer(self, issuer: str) -> TrustedIssuer | None:
        with self._lock:
            return self._trusted.get(issuer)

    def _federated_client(self, issuer: str, subject: str) -> str | None:
        """The client whose workload tokens come from ``issuer`` for ``subject``."""
        with self._lock:
            for client_id, client in self._clients.items():
                if client.federated == (issuer, subject):
                    return client_id
        return None

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

    def _binding(self, req: RecordedRequest) -> Binding:
        """What a token issued for ``req`` is bound to: its client certificate (when bound),
        and the key of its DPoP proof."""
        return Binding(req.client_cert_thumbprint if self.bind_tokens else None, req.dpop_jkt)

    def _remember(self, token: str, issued: Issued, grant: str | None) -> str:
        with self._lock:
            self._tokens[token] = issued
            self._issued_tokens.append(token)
            if grant is not None:
                self._grants.append(grant)
        return token

    def _issue(
        self,
        client_id: str,
        scope: str,
        aud: str,
        grant: str,
        *,
        whole_seconds: bool = False,
        bound_to: Binding | None = None,
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
        bound_to = bound_to or Binding()
        cnf = {"x5t#S256": bound_to.cert, "jkt": bound_to.jkt}
        if bound_to.cert or bound_to.jkt:
            claims["cnf"] = {name: value for name, value in cnf.items() if value}
        header = {"alg": "HS256", "typ": "JWT"}
        token = jwt.encode(header, {**claims, "scope": scope}, self._signing_key)
        issued = Issued(
            client_id, expires, "access", scope, bound_to=bound_to.cert, jkt=bound_to.jkt
        )
        return self._remember(token, issued, grant), lifetime

    def _issue_refresh(
        self, client_id: str, scope: str, *, whole_seconds: bool = False
    ) -> tuple[str, float]:
        lifetime = self.refresh_lifetime
        lifetime = self.lifetime + 1 if lifetime is None else lifetime
        expires = time.time() + lifetime
        expires = math.floor(expires) if whole_seconds else expires
        issued = Issued(client_id, expires, "refresh", scope)
        return self._remember(secrets.token_urlsafe(32), issued, None), lifetime

    def _expires_at(self, token: str) -> float:
        with self._lock:
            return self._tokens[token].expires_at

    def _valid(self, token: str, kind: str) -> Issued | None:
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued.kind != kind or issued.revoked:
            return None
        return issued if time.time() < issued.expires_at else None

    def _redeem_refresh(self, client_id: str, token: str) -> str:
        issued = self._valid(token, "refresh")
        if issued is None:
            raise DialectError(400, "invalid_grant", "Token is not active")
        if issued.client_id != client_id:
            raise DialectError(400, "invalid_grant", "Token client and authorized client differ")
        return issued.scope

    def revoke_all(self, *, include_refresh: bool = True) -> None:
        """Make every token issued so far invalid (refresh tokens too, unless told not to)."""
        with self._lock:
            for issued in self._tokens.values():
                issued.revoked = issued.revoked or include_refresh or issued.kind == "access"
