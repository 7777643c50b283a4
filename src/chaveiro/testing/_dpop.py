"""The fake server's DPoP (RFC 9449): proofs checked strictly, with joserfc, and nonces.

:func:`check_proof` does every check of RFC 9449 §4.3 on the one ``DPoP``
header of a request and returns the key's RFC 7638 thumbprint (what a bound
token's ``cnf.jkt`` holds), or raises :class:`DPoPRefusal` saying which check
failed. :class:`NonceMint` holds the server's current nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

if TYPE_CHECKING:
    from chaveiro.testing._wire import RecordedRequest

__all__ = ["ALGS", "DPoPRefusal", "NonceMint", "NonceRotation", "check_proof", "htu_of"]

ALGS = ("ES256", "ES384", "ES512", "EdDSA", "Ed25519", "PS256", "PS384", "PS512", "RS256")
"""Asymmetric JWS algorithms the fake accepts in proofs (never ``none`` nor a MAC)."""
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_TYPES = frozenset({"EC", "OKP", "RSA"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

NonceRotation = Literal["never", "each_answer", "each_request"]
"""When the server's nonce changes: only on ``rotate_dpop_nonce()``; after every accepted
proof (the answer carries the new one); or before every check (no proof ever has it)."""


class DPoPRefusal(Exception):  # noqa: N818 - an answer, not a failure of the fake
    """A proof the server refuses: ``error`` is ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


def htu_of(scheme: str, req: RecordedRequest) -> str:
    """The URL the request was sent to, normalised as the proof's ``htu`` must be."""
    return _normalised(f"{scheme}://{req.headers.get('host', '')}{req.path}")


def _normalised(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _segment(text: str) -> dict[str, object]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise DPoPRefusal("invalid_dpop_proof", "the proof is not a JWS") from None
    if not isinstance(value, dict):
        raise DPoPRefusal("invalid_dpop_proof", "the proof is not a JWS")
    return value


def _bad(description: str) -> DPoPRefusal:
    return DPoPRefusal("invalid_dpop_proof", description)


class NonceMint:
    """The server's current DPoP nonce; one for the token endpoint and the API alike."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = secrets.token_urlsafe(16)

    def rotate(self) -> str:
        with self._lock:
            self.current = secrets.token_urlsafe(16)
            return self.current


@dataclass(frozen=True)
class Expected:
    """What the request the proof came with says the proof must hold."""

    method: str
    htu: str
    access_token: str | None = None
    nonce: str | None = None
    iat_window: float = 60.0


def _verified(proof: str, alg: str, jwk: dict[str, object]) -> tuple[dict[str, object], str]:
    try:
        key = JWKRegistry.import_key(jwk)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise _bad("the jwk header is not a usable public key") from None
    registry = jws.JWSRegistry(algorithms=[alg])
    registry.max_header_length = 4096  # an RSA key's jwk is longer than joserfc's default
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns about EdDSA (RFC 9864)
            signed = jws.deserialize_compact(proof, key, registry=registry)
    except (JoseError, ValueError, TypeError):
        raise _bad("the proof's signature does not verify with its jwk") from None
    claims = json.loads(signed.payload)
    if not isinstance(claims, dict):
        raise _bad("the proof's payload is not a JSON object")
    return claims, key.thumbprint()


def _header_of(proof: str) -> tuple[str, dict[str, object]]:
    """The ``alg`` and ``jwk`` of a proof's JOSE header, checked (§4.3 items 1 to 5)."""
    parts = proof.split(".")
    if len(parts) != 3 or not all(parts):
        raise _bad("the proof is not a compact JWS")
    head = _segment(parts[0])
    if head.get("typ") != "dpop+jwt":
        raise _bad("typ must be dpop+jwt")
    alg = head.get("alg")
    if not isinstance(alg, str) or alg not in ALGS:
        raise _bad(f"alg {alg!r} is not an accepted asymmetric algorithm")
    jwk = head.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") not in _KEY_TYPES:
        raise _bad("the jwk header must be an EC, OKP or RSA public key")
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise _bad("the jwk header holds a private key")
    return alg, jwk


def _check_claims(claims: dict[str, object], expected: Expected) -> str:
    """The claims checks (§4.3 items 6 to 12, but ``jti`` replay): the ``jti``."""
    jti, iat, htu = claims.get("jti"), claims.get("iat"), claims.get("htu")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise _bad("jti is missing")
    if claims.get("htm") != expected.method:
        raise _bad(f"htm is not {expected.method}")
    if not isinstance(htu, str) or _normalised(htu) != expected.htu:
        raise _bad(f"htu is not {expected.htu}")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise _bad("iat is missing")
    if abs(time.time() - iat) > expected.iat_window:
        raise _bad("iat is outside the accepted window")
    if expected.access_token is not None:
        ath = hashlib.sha256(expected.access_token.encode("ascii")).digest()
        if claims.get("ath") != base64.urlsafe_b64encode(ath).rstrip(b"=").decode():
            raise _bad("ath does not match the access token")
    if expected.nonce is not None and claims.get("nonce") != expected.nonce:
        raise DPoPRefusal("use_dpop_nonce", "a DPoP nonce is required")
    return jti


def check_proof(header: str | None, expected: Expected) -> tuple[str, str]:
    """RFC 9449 §4.3: ``(jkt, jti)`` of a good proof, else :class:`DPoPRefusal`.

    Every check but ``jti`` replay, which needs the server's memory.
    """
    if header is None:
        raise _bad("a DPoP proof is required")
    proof = header.strip()
    if "," in proof or " " in proof:
        raise _bad("more than one DPoP header")
    alg, jwk = _header_of(proof)
    claims, jkt = _verified(proof, alg, jwk)
    return jkt, _check_claims(claims, expected)
