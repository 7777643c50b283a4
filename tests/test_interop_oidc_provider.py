"""RFC 10070 defaults against an independent server: panva's oidc-provider, a certified OP.

The server runs on Node.js from ``tests/interop/oidc-provider`` (``scripts/bootstrap``
installs it with npm); without Node.js or that install these tests are skipped.
oidc-provider accepts the issuer or the token endpoint as a client assertion's
audience; ``CHAVEIRO_STRICT=1`` makes it require RFC 10070 (its ``typ`` and the
issuer as the one audience), as Keycloak >= 26.2 and FAPI 2.0 servers do.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chaveiro import ClientCredentialsAuth, CredentialsRejectedError

HERE = Path(__file__).parent / "interop" / "oidc-provider"
SECRET = "interop-secret-0123456789-0123456789"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (HERE / "node_modules" / "oidc-provider").is_dir(),
    reason="Node.js and tests/interop/oidc-provider/node_modules (scripts/bootstrap) are needed",
)


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def key() -> tuple[bytes, dict[str, str]]:
    """An ES256 key: its PEM for chaveiro, its public JWK for the provider."""
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y)}
    return pem, jwk


def _client(client_id: str, method: str, **extra: object) -> dict[str, object]:
    return {
        "client_id": client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": method,
        **extra,
    }


@pytest.fixture(params=[False, True], ids=["lenient", "strict"])
def provider(request: pytest.FixtureRequest, key) -> Iterator[tuple[str, bool]]:
    """oidc-provider on 127.0.0.1; yields ``(issuer, strict)``."""
    clients = [
        _client("pk", "private_key_jwt", jwks={"keys": [key[1]]}),
        _client("hs", "client_secret_jwt", client_secret=SECRET),
    ]
    env = {**os.environ, "CHAVEIRO_CLIENTS": json.dumps(clients)}
    env["CHAVEIRO_STRICT"] = "1" if request.param else "0"
    process = subprocess.Popen(
        ["node", "server.mjs"],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}", bool(request.param)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _use(auth: ClientCredentialsAuth) -> str:
    return auth.get_token().access_token


Make = Callable[..., ClientCredentialsAuth]


def test_private_key_jwt_from_issuer(provider, key):
    """from_issuer() + private_key_jwt: the defaults (typ, aud = issuer) are accepted."""
    issuer, _ = provider
    auth = ClientCredentialsAuth.from_issuer(issuer, "pk", private_key=key[0], signing_alg="ES256")
    assert auth._settings.auth_method == "private_key_jwt"
    assert _use(auth)


def test_client_secret_jwt_with_issuer(provider):
    """client_secret_jwt with issuer=: accepted, the token endpoint found by discovery."""
    issuer, _ = provider
    auth = ClientCredentialsAuth.from_issuer(issuer, "hs", SECRET, auth_method="client_secret_jwt")
    assert _use(auth)
    assert _use(ClientCredentialsAuth(auth.token_url, "hs", SECRET, auth_method="client_secret_jwt",
                                      issuer=issuer, cache=None))  # fmt: skip


def test_token_endpoint_audience(provider, key):
    """assertion_audience='token_endpoint': the lenient server takes it, the strict one refuses."""
    issuer, strict = provider
    auth = ClientCredentialsAuth.from_issuer(
        issuer, "pk", private_key=key[0], signing_alg="ES256", assertion_audience="token_endpoint"
    )
    if strict:
        with pytest.raises(CredentialsRejectedError, match="invalid_client"):
            _use(auth)
    else:
        assert _use(auth)


def test_every_token_request_has_a_fresh_assertion(provider, key):
    """oidc-provider refuses a replayed jti: three token requests in a row all succeed."""
    issuer, _ = provider
    for _ in range(3):
        from chaveiro.testing import reset  # noqa: PLC0415

        reset()  # forget the token, so each get_token() is a token request
        auth = ClientCredentialsAuth.from_issuer(
            issuer, "pk", private_key=key[0], signing_alg="ES256"
        )
        assert _use(auth)
    with requests.Session() as session:
        discovery = session.get(issuer + "/.well-known/openid-configuration", timeout=5).json()
    assert "private_key_jwt" in discovery["token_endpoint_auth_methods_supported"]
