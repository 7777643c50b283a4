"""DPoP test helpers: private keys of every kind, and an independent proof verifier (PyJWT)."""

from __future__ import annotations

import base64
import hashlib
import time
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@cache
def key_pem(kind: str) -> bytes:
    """A private key (PEM) of ``kind``: ``ec``, ``ec384``, ``ec521``, ``ed25519``, ``rsa``."""
    made: Any
    if kind == "ed25519":
        made = ed25519.Ed25519PrivateKey.generate()
    elif kind.startswith("ec"):
        curve = {"ec": ec.SECP256R1(), "ec384": ec.SECP384R1(), "ec521": ec.SECP521R1()}[kind]
        made = ec.generate_private_key(curve)
    else:
        made = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return pem(made)


def ath(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(
    proof: str,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Check ``proof`` with PyJWT (not chaveiro's code, nor the fake server's joserfc).

    Returns the claims; asserts every RFC 9449 §4.2 rule a client must follow.
    """
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert set(header) == {"typ", "alg", "jwk"}
    assert not PRIVATE_MEMBERS.intersection(header["jwk"]), "a private key in the proof"
    key = jwt.PyJWK(header["jwk"], algorithm=header["alg"])
    claims: dict[str, Any] = jwt.decode(
        proof,
        key.key,
        algorithms=[header["alg"]],
        options={"require": ["jti", "iat"], "verify_aud": False},
    )
    assert claims["htm"] == htm
    assert claims["htu"] == htu
    assert isinstance(claims["iat"], int)
    assert abs(claims["iat"] - time.time()) < 60
    assert len(claims["jti"]) >= 16
    assert claims.get("ath") == (None if access_token is None else ath(access_token))
    assert claims.get("nonce") == nonce
    expected = {"jti", "htm", "htu", "iat"} | ({"ath"} if access_token else set())
    assert set(claims) == expected | ({"nonce"} if nonce else set())
    return claims
