"""DPoP (RFC 9449): tokens bound to a key the client holds, and a fresh proof on every request.

Sans I/O. :func:`dpop_settings` checks ``dpop_key=``, ``dpop_alg=`` and
``dpop_allow_bearer=`` once, at construction, and returns a :class:`DPoP` (or
``None``: DPoP off). A :class:`DPoP` makes proofs (§4): a JWS whose header
(``typ: dpop+jwt``, ``alg``, the public ``jwk``) is encoded once, and whose
claims (``jti``, ``htm``, ``htu``, ``iat``; ``ath`` with an access token;
``nonce`` when the server gave one) are fresh each time: one signature per
request.

Nonces (§8, §9) are remembered per key and per server (origin), from the
``DPoP-Nonce`` header of any answer, a 200 included: the next proof to that
server carries the newest one. The memory is bounded (:data:`MAX_NONCES`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

from chaveiro._dpop_keys import KeyMaterial, Signer, b64, generated_key, load_key
from chaveiro._errors import ConfigurationError, CredentialsRejectedError

if TYPE_CHECKING:
    import os

    from chaveiro._dialect import TokenRequest

__all__ = [
    "MAX_NONCES",
    "DPoP",
    "DPoPKey",
    "asks_for_nonce",
    "ath_of",
    "dpop_settings",
    "forget_nonces",
    "nonce_in",
    "target",
]

DPoPKey: TypeAlias = "str | bytes | os.PathLike[str] | bool | None"
"""What ``dpop_key=`` takes: PEM bytes or text, a path to a PEM file, ``True`` to generate."""

MAX_NONCES = 1024
"""Servers (per key) whose latest nonce is remembered; the least recently told is forgotten."""

_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,4096}")
"""RFC 9449 §8.1: ``nonce = 1*NQCHAR`` (visible ASCII but ``"`` and ``\\``); length capped."""
_USE_NONCE = re.compile(r"""\berror\s*=\s*"?use_dpop_nonce\b""", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def ath_of(access_token: str) -> str:
    """§4.2 ``ath``: base64url of the SHA-256 of the access token's ASCII."""
    return b64(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


@lru_cache(maxsize=1024)
def target(url: str) -> tuple[str, str]:
    """``(origin, htu)`` of ``url``: htu is scheme, host, non-default port and path (§4.2).

    No query, no fragment; scheme and host in lower case, the default port left
    out, an empty path as ``/`` (RFC 3986 §6.2.2, §6.2.3), so the server's
    normalised view of the URL matches.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    origin = f"{scheme}://{netloc}"
    return origin, origin + (parts.path or "/")


class _Nonces:
    """The newest nonce of each ``(key thumbprint, origin)``; bounded, thread-safe."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> str | None:
        return self._values.get(key)  # one dict read: safe without the lock

    def put(self, key: tuple[str, str], value: str) -> None:
        with self._lock:
            values = self._values
            if values.pop(key, None) is None and len(values) >= MAX_NONCES:
                del values[next(iter(values))]
            values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


_nonces = _Nonces()


def forget_nonces() -> None:
    """Forget every nonce this process was given (``chaveiro.testing.reset()``)."""
    _nonces.clear()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header of any HTTP library's headers (each ignores case), or of a plain dict."""
    value = headers.get(name)
    if value is None and type(headers) is dict:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value if isinstance(value, str) else None


def asks_for_nonce(headers: Mapping[str, str]) -> bool:
    """True if a 401's ``WWW-Authenticate`` says ``error="use_dpop_nonce"`` (§9)."""
    challenge = _header(headers, "WWW-Authenticate")
    return challenge is not None and _USE_NONCE.search(challenge) is not None


def nonce_in(proof: str | None) -> str | None:
    """The ``nonce`` claim of a proof we made (read back on a nonce challenge only)."""
    payload = (proof or "").split(".")[1:2]
    if not payload:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload[0] + "=" * (-len(payload[0]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    nonce = claims.get("nonce") if isinstance(claims, dict) else None
    return nonce if isinstance(nonce, str) else None


class DPoP:
    """The DPoP settings of one auth object: its key, algorithm, and what it accepts.

    Immutable; pickled as the key's PEM (a generated key travels like the secret).
    """

    __slots__ = ("_header", "_material", "_sign", "alg", "allow_bearer", "thumbprint")

    def __init__(self, material: KeyMaterial, alg: str, *, allow_bearer: bool) -> None:
        self._material = material
        self.alg = alg
        self.allow_bearer = allow_bearer
        self.thumbprint = material.thumbprint
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": material.jwk}
        self._header = b64(json.dumps(header, separators=(",", ":")).encode()) + "."
        self._sign: Signer = material.signer(alg)

    @property
    def token_types(self) -> tuple[str, ...]:
        """The ``token_type`` answers accepted from the token endpoint."""
        return ("DPoP", "Bearer") if self.allow_bearer else ("DPoP",)

    @property
    def identity(self) -> str:
        """What DPoP adds to the identity: the key, and whether a Bearer token may stand in."""
        return f"{self.thumbprint} bearer" if self.allow_bearer else self.thumbprint

    def proof(self, method: str, url: str, now: float, ath: str | None = None) -> str:
        """A new proof for ``method url``, with the server's latest nonce; ``ath`` for a token."""
        origin, htu = target(url)
        claims = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": htu, "iat": int(now)}
        nonce = _nonces.get((self.thumbprint, origin))
        if nonce is not None:
            claims["nonce"] = nonce
        if ath is not None:
            claims["ath"] = ath
        signing_input = self._header + b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{signing_input}.{b64(self._sign(signing_input.encode('ascii')))}"

    def signed(self, request: TokenRequest, now: float) -> TokenRequest:
        """A token ``request`` with its proof (made last, when the request is final)."""
        proof = self.proof(request.method, request.url, now)
        return replace(request, headers=(*request.headers, ("DPoP", proof)))

    def token_retry(self, error: Exception, request: TokenRequest, nonce: str | None) -> bool:
        """True if the token endpoint's ``error`` to ``request`` is ``use_dpop_nonce`` (§8)
        and its answer gave ``nonce``, one that the request's proof did not carry."""
        return (
            isinstance(error, CredentialsRejectedError)
            and error.error == "use_dpop_nonce"
            and self.retry_with_nonce(dict(request.headers).get("DPoP"), nonce)
        )

    def heard(self, url: str, headers: Mapping[str, str]) -> str | None:
        """Remember the ``DPoP-Nonce`` of an answer from ``url``'s server; return it if valid."""
        nonce = _header(headers, "DPoP-Nonce")
        if nonce is None:
            return None
        nonce = nonce.strip()
        if not _NONCE.fullmatch(nonce):
            return None
        key = (self.thumbprint, target(url)[0])
        if _nonces.get(key) != nonce:
            _nonces.put(key, nonce)
        return nonce

    def retry_with_nonce(self, proof: str | None, nonce: str | None) -> bool:
        """True if a nonce challenge to ``proof`` gave ``nonce``, one the proof did not carry."""
        return nonce is not None and nonce != nonce_in(proof)

    def __repr__(self) -> str:
        return f"DPoP(alg={self.alg!r}, thumbprint={self.thumbprint!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DPoP):
            return NotImplemented
        return (self.thumbprint, self.alg, self.allow_bearer) == (
            other.thumbprint,
            other.alg,
            other.allow_bearer,
        )

    def __hash__(self) -> int:
        return hash((self.thumbprint, self.alg, self.allow_bearer))

    def __copy__(self) -> DPoP:
        return self

    def __deepcopy__(self, memo: object) -> DPoP:
        return self

    def __reduce__(self) -> tuple[object, tuple[bytes, str, bool]]:
        return _revive, (self._material.pem, self.alg, self.allow_bearer)


def _revive(pem: bytes, alg: str, allow_bearer: bool) -> DPoP:
    return DPoP(load_key(pem), alg, allow_bearer=allow_bearer)


def dpop_settings(key: object, alg: object = None, allow_bearer: object = False) -> DPoP | None:
    """``dpop_key=``, ``dpop_alg=`` and ``dpop_allow_bearer=`` checked: a :class:`DPoP` or None.

    The key: PEM bytes or text, a path to a PEM file, or ``True`` for this process's
    generated EC P-256 key. The algorithm: the key's default (ES256 for P-256, EdDSA
    for Ed25519, PS256 for RSA) unless ``alg`` names another the key can sign with.
    """
    if not isinstance(allow_bearer, bool):
        raise ConfigurationError("dpop_allow_bearer must be True or False.")
    if key is None or key is False:
        if alg is not None or allow_bearer:
            given = "dpop_alg=" if alg is not None else "dpop_allow_bearer=True"
            raise ConfigurationError(
                f"{given} was given without dpop_key=: pass the DPoP private key (or"
                " dpop_key=True to generate one) to turn DPoP on."
            )
        return None
    material = generated_key() if key is True else load_key(key)
    if alg is None:
        alg = material.algs[0]
    if not isinstance(alg, str) or alg not in material.algs:
        raise ConfigurationError(
            f"dpop_alg={alg!r} does not fit this {material.kind} key: use"
            f" {' or '.join(repr(a) for a in material.algs)}, or leave dpop_alg out"
            f" ({material.algs[0]!r})."
        )
    return DPoP(material, alg, allow_bearer=allow_bearer)
