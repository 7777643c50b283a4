"""The cost of DPoP on a warm token: chaveiro's auth step next to a hand-written plugin.

The baseline is the smallest requests ``AuthBase`` that does DPoP right: it holds
one token, its ``ath`` and the encoded JOSE header, and for each request builds
the same claims (``jti``, ``htm``, ``htu`` without the query, ``iat``, ``ath``)
and signs them with ``cryptography`` directly. chaveiro's auth step does that
and what the baseline does not: the token's freshness, ``only_hosts``, the
server's nonce, and the response hook that reads nonces and replays.

Prints µs per call of the requests auth step (median of interleaved rounds) and
the ratio to the baseline, for ES256 (EC P-256) and EdDSA (Ed25519). Figures,
not assertions; the two variants are measured in the same run.

    .venv/bin/python benchmarks/dpop.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer

STEP_CALLS = 2_000
ROUNDS = 31


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class HandWritten(requests.auth.AuthBase):
    """A minimal DPoP plugin: one token, one key, the same proof, signed with cryptography."""

    def __init__(self, key: Any, token: str) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            numbers = key.public_key().public_numbers()
            jwk = {
                "crv": "P-256",
                "kty": "EC",
                "x": b64(numbers.x.to_bytes(32, "big")),
                "y": b64(numbers.y.to_bytes(32, "big")),
            }
            alg, ecdsa = "ES256", ec.ECDSA(hashes.SHA256())

            def sign(data: bytes) -> bytes:
                r, s = decode_dss_signature(key.sign(data, ecdsa))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        else:
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            jwk, alg, sign = {"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}, "EdDSA", key.sign
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk}
        self.header = b64(json.dumps(header, separators=(",", ":")).encode()) + "."
        self.sign = sign
        self.authorization = "DPoP " + token
        self.ath = b64(hashlib.sha256(token.encode()).digest())

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(r.url or "")
        claims = {
            "jti": secrets.token_urlsafe(16),
            "htm": r.method,
            "htu": f"{url.scheme}://{url.netloc}{url.path}",
            "iat": int(time.time()),
            "ath": self.ath,
        }
        signing_input = self.header + b64(json.dumps(claims, separators=(",", ":")).encode())
        r.headers["Authorization"] = self.authorization
        r.headers["DPoP"] = f"{signing_input}.{b64(self.sign(signing_input.encode()))}"
        return r


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def measure(auth: ClientCredentialsAuth, baseline: HandWritten, url: str) -> dict[str, float]:
    """µs per call of each (median over rounds), and the median of the per-round ratios.

    Each round runs the two side by side on the same number of fresh requests, so a
    burst of load on a shared machine hits both; the ratio of a round is taken within it.
    """
    preps = [requests.Request("GET", url + "?page=1").prepare() for _ in range(STEP_CALLS)]

    def run(plugin: requests.auth.AuthBase) -> float:
        for p in preps:
            p.hooks["response"].clear()
        it = iter(preps)
        return per_call(lambda: plugin(next(it)), STEP_CALLS)

    ours, theirs, ratios = [], [], []
    for index in range(ROUNDS):
        pair = (
            (run(baseline), run(auth)) if index % 2 else tuple(reversed((run(auth), run(baseline))))
        )
        theirs.append(pair[0])
        ours.append(pair[1])
        ratios.append(pair[1] / pair[0])
    return {
        "hand-written": statistics.median(theirs),
        "chaveiro": statistics.median(ours),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    keys = {
        "ES256 (EC P-256)": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA (Ed25519)": ed25519.Ed25519PrivateKey.generate(),
    }
    with FakeTokenServer(dpop=True) as server:
        server.add_client("bench", "bench-secret-0123456789")
        for name, key in keys.items():
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            auth = ClientCredentialsAuth(
                server.oauth_token_url, "bench", "bench-secret-0123456789", dpop_key=pem
            )
            token = auth.get_token()
            baseline = HandWritten(key, token.access_token)
            figures = measure(auth, baseline, server.api_url())
            print(f"{name}: requests auth step on a warm token (µs/call, median of {ROUNDS})")
            for variant in ("hand-written", "chaveiro"):
                print(f"  {variant:<14} {figures[variant]:8.2f}")
            print(f"  ratio          {figures['ratio']:8.3f}x the hand-written plugin")


if __name__ == "__main__":
    main()
