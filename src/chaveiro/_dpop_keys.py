"""DPoP keys: loading a private key, its public JWK, its RFC 7638 thumbprint, and its signer.

The only DPoP module that touches ``cryptography``, and only inside its
functions: nothing here is imported until ``dpop_key=`` is given. A signer
turns the JWS signing input into the raw JWS signature (RFC 7518 §3: ``R || S``
for ECDSA, not DER), with the algorithm objects made once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chaveiro._errors import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["KeyMaterial", "b64", "generated_key", "load_key"]

Signer = Callable[[bytes], bytes]

_EC_ALGS = {"secp256r1": ("P-256", "ES256", 32), "secp384r1": ("P-384", "ES384", 48)}
_EC_ALGS["secp521r1"] = ("P-521", "ES512", 66)
_RSA_ALGS = ("PS256", "PS384", "PS512", "RS256", "RS384", "RS512")
_MIN_RSA_BITS = 2048
_MAX_KEY_FILE = 64 * 1024
_KINDS = "an EC (P-256, P-384, P-521), Ed25519 or RSA (2048 bits or more) private key"


def b64(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64(value.to_bytes(length, "big"))


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A loaded private key: the algorithms it can sign with, its public JWK, its PEM."""

    kind: str
    """``EC P-256``, ``Ed25519``, ``RSA 3072``...: what the key is, for messages."""
    algs: tuple[str, ...]
    """The JWS algorithms this key can sign with; the first is the default."""
    jwk: dict[str, str]
    """The public JWK: the members RFC 7638 names for the thumbprint, nothing private."""
    pem: bytes = field(repr=False)
    """PKCS #8, unencrypted: how the key travels in a pickle."""
    key: PrivateKeyTypes = field(repr=False)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 JWK SHA-256 thumbprint, base64url: what a bound token's ``cnf.jkt`` holds."""
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":"))
        return b64(hashlib.sha256(canonical.encode("ascii")).digest())

    def signer(self, alg: str) -> Signer:
        """The raw JWS signature of a signing input, with ``alg`` (one of :attr:`algs`)."""
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - DPoP only
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.utils import (  # noqa: PLC0415
            decode_dss_signature,
        )

        key = self.key
        digest: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
            "256": hashes.SHA256,
            "384": hashes.SHA384,
            "512": hashes.SHA512,
        }
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ecdsa = ec.ECDSA(digest[alg[2:]]())
            size = _EC_ALGS[key.curve.name][2]
            sign_ec = key.sign

            def signature(data: bytes) -> bytes:
                r, s = decode_dss_signature(sign_ec(data, ecdsa))
                return r.to_bytes(size, "big") + s.to_bytes(size, "big")

            return signature
        assert isinstance(key, rsa.RSAPrivateKey)
        hash_ = digest[alg[2:]]()
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        sign_rsa = key.sign
        return lambda data: sign_rsa(data, pad, hash_)


def _material(key: object) -> KeyMaterial:
    """``key`` as :class:`KeyMaterial`; a key of a kind DPoP cannot use is refused."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - DPoP only
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: PLC0415

    algs: tuple[str, ...]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        kind, algs = "Ed25519", ("EdDSA", "Ed25519")  # RFC 9864 names it Ed25519 too
        jwk = {"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGS:
        crv, alg, size = _EC_ALGS[key.curve.name]
        point = key.public_key().public_numbers()
        kind, algs = f"EC {crv}", (alg,)
        jwk = {"crv": crv, "kty": "EC", "x": _uint(point.x, size), "y": _uint(point.y, size)}
    elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= _MIN_RSA_BITS:
        public = key.public_key().public_numbers()
        kind, algs = f"RSA {key.key_size}", _RSA_ALGS
        jwk = {"e": _uint(public.e), "kty": "RSA", "n": _uint(public.n)}
    else:
        what = getattr(getattr(key, "curve", None), "name", None) or type(key).__name__
        raise ConfigurationError(
            f"dpop_key holds a key DPoP cannot use ({what}): give {_KINDS}. A new P-256 key:"
            " openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dpop.pem"
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyMaterial(kind, algs, jwk, pem, key)


def _pem_of(given: object) -> bytes:
    """The PEM text that ``dpop_key=`` gives: itself, or the content of the file it names."""
    if isinstance(given, bytes):
        return given
    if isinstance(given, str) and "-----BEGIN" in given:
        return given.encode("utf-8", "replace")
    if not isinstance(given, str | os.PathLike) or not str(given).strip():
        raise ConfigurationError(
            f"dpop_key must be a PEM private key (bytes or text), the path of a PEM file, or"
            f" True to generate a key in memory; not {type(given).__name__}."
        )
    path = Path(given)
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigurationError(
            f"dpop_key={os.fspath(path)!r} could not be read ({exc.strerror or exc}): give the"
            " path of a PEM private key file, or the PEM text itself."
        ) from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigurationError(f"dpop_key={os.fspath(path)!r} is too large for a PEM key file.")
    return data


def load_key(given: object) -> KeyMaterial:
    """The private key that ``dpop_key=`` gives: PEM bytes or text, or a path to a PEM file."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - DPoP only

    pem = _pem_of(given)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigurationError(
            "dpop_key is an encrypted PEM key: give it unencrypted (keep the file readable by"
            " this service only), e.g. openssl pkey -in key.pem -out dpop.pem."
        ) from None
    except (ValueError, IndexError):  # "from None": the loader's message may quote key material
        raise ConfigurationError(
            "dpop_key is not a PEM private key that could be loaded: give the PEM text (or the"
            f" path of a file) of {_KINDS}, beginning with -----BEGIN PRIVATE KEY-----."
        ) from None
    return _material(key)


_generated: KeyMaterial | None = None
_generated_lock = threading.Lock()


def generated_key() -> KeyMaterial:
    """This process's own EC P-256 key (``dpop_key=True``): made at its first use, then kept.

    Every auth object of the process made with ``dpop_key=True`` shares it, so objects
    made per call share their tokens too. A ``fork()``ed child keeps it; a pickled auth
    object carries it to other processes, as it carries the client secret.
    """
    global _generated  # noqa: PLW0603 - one key per process, made once
    with _generated_lock:
        if _generated is None:
            from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

            _generated = _material(ec.generate_private_key(ec.SECP256R1()))
        return _generated
