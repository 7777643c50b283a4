"""Federated client authentication: assertions that another issuer signed for a client.

A workload on Kubernetes, Azure or GitHub Actions holds no secret: its
platform gives it a short-lived JWT, and the authorization server trusts that
platform's issuer (Keycloak's federated client authentication, Entra's
workload identity federation). :class:`WorkloadIssuer` plays the platform on a
laptop; ``FakeTokenServer.trust_issuer()`` registers an issuer (this one, or a
real cluster's JWKS), and ``add_client(federated_subject=...)`` ties a client
to the ``sub`` that issuer gives the workload.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from chaveiro.testing._wire import DialectError

if TYPE_CHECKING:
    from chaveiro.testing._server import FakeTokenServer as _Server

__all__ = [
    "TrustedIssuer",
    "WorkloadIssuer",
    "federated_client",
    "federation",
    "is_federated",
    "trusted_issuer",
]

_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


@dataclass(frozen=True)
class TrustedIssuer:
    """An external issuer whose JWTs authenticate clients, and the audience they must carry."""

    issuer: str
    keys: KeySet
    audience: str | None
    """``None``: the fake server's own issuer (Keycloak's rule); Entra uses
    ``api://AzureADTokenExchange``."""


class WorkloadIssuer:
    """A platform that signs workload tokens: a Kubernetes cluster, Azure, GitHub Actions.

    ``mint()`` makes the kind of JWT the platform gives a workload (RS256, with
    ``kid``); ``jwks`` is what the platform publishes, for
    ``FakeTokenServer.trust_issuer(issuer.issuer, issuer.jwks)``.
    """

    def __init__(
        self, issuer: str = "https://kubernetes.default.svc.cluster.local", *, alg: str = "RS256"
    ) -> None:
        if alg not in ("RS256", "ES256"):
            raise ValueError("alg must be RS256 or ES256")
        self.issuer = issuer
        self.alg = alg
        key = RSAKey.generate_key(2048) if alg == "RS256" else ECKey.generate_key("P-256")
        self._key: RSAKey | ECKey = key
        self.kid = key.thumbprint()

    @property
    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set (``{"keys": [...]}``), as the platform serves it."""
        public = self._key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": self.alg}]}

    def mint(
        self,
        subject: str,
        *,
        audience: str | list[str],
        lifetime: float = 3600.0,
        **claims: Any,
    ) -> str:
        """A signed workload token for ``subject`` (``system:serviceaccount:ns:name``, say)."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": int(now + lifetime),
            "jti": secrets.token_urlsafe(12),
            **claims,
        }
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, payload, self._key, algorithms=[self.alg])


def federation(issuer: str | None, subject: str | None) -> tuple[str, str] | None:
    """``add_client()``'s ``(federated_issuer, federated_subject)``, both or neither."""
    if (issuer is None) != (subject is None):
        raise ValueError("give federated_issuer and federated_subject together")
    return None if issuer is None or subject is None else (issuer, subject)


def trusted_issuer(issuer: object, jwks: Mapping[str, Any], audience: str | None) -> TrustedIssuer:
    """``jwks`` checked: a JSON Web Key Set of public keys."""
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("issuer must be the issuer URL its tokens carry in 'iss'")
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"jwks is not a JSON Web Key Set: {exc}") from None
    if any(key.is_private for key in keys):
        raise ValueError("jwks must hold public keys only")
    return TrustedIssuer(issuer, keys, audience)


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        extracted = jws.extract_compact(assertion.encode())
        claims = json.loads(extracted.payload)
    except (JoseError, ValueError, TypeError, AttributeError, RecursionError):
        raise DialectError(401, desc="malformed client_assertion") from None
    if not isinstance(claims, dict):
        raise DialectError(401, desc="malformed client_assertion")
    return dict(extracted.headers()), claims


def is_federated(srv: _Server, assertion: str) -> TrustedIssuer | None:
    """The trusted issuer that signed ``assertion``, if its ``iss`` names one."""
    _, claims = _unverified(assertion)
    iss = claims.get("iss")
    return srv._trusted_issuer(iss) if isinstance(iss, str) else None


def federated_client(srv: _Server, trusted: TrustedIssuer, assertion: str, client_id: str) -> str:
    """The client that ``assertion`` (signed by ``trusted``) authenticates, or a 401.

    Workload tokens are reused while they live (kubelet rotates them at 80% of
    their lifetime), so their ``jti`` is not held against them.
    """
    try:
        claims = jwt.decode(assertion, trusted.keys, algorithms=_ALGORITHMS).claims
    except (JoseError, ValueError, TypeError):
        raise DialectError(401, desc="federated client_assertion signature is not valid") from None
    audience = trusted.audience or srv.issuer
    registry = jwt.JWTClaimsRegistry(
        leeway=0,
        iss={"essential": True, "value": trusted.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError):
        raise DialectError(
            401, desc=f"federated client_assertion claims are not acceptable (aud {audience})"
        ) from None
    found = srv._federated_client(trusted.issuer, str(claims["sub"]))
    if found is None or (client_id and client_id != found):
        raise DialectError(401, desc="no client is federated with this issuer and subject")
    return found
