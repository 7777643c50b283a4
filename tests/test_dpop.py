"""DPoP settings, keys and proofs, without a server (RFC 9449 §4, RFC 7638).

Proofs are checked with PyJWT (``tests/dpop_keys.verify``): code that is neither
chaveiro's nor the fake server's.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaveiro import ClientCredentialsAuth, ConfigurationError, Token
from chaveiro._dpop import (
    MAX_NONCES,
    _nonces,
    asks_for_nonce,
    ath_of,
    dpop_settings,
    nonce_in,
    target,
)
from chaveiro._dpop_keys import KeyMaterial, generated_key
from tests.dpop_keys import PRIVATE_MEMBERS, key_pem, verify

URL = "https://idp.example.com/token"


def header_of(proof: str) -> dict[str, object]:
    part = proof.split(".", maxsplit=1)[0]
    value: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


@pytest.mark.parametrize(
    ("kind", "alg", "members"),
    [
        ("ec", "ES256", {"kty", "crv", "x", "y"}),
        ("ec384", "ES384", {"kty", "crv", "x", "y"}),
        ("ec521", "ES512", {"kty", "crv", "x", "y"}),
        ("ed25519", "EdDSA", {"kty", "crv", "x"}),
        ("rsa", "PS256", {"kty", "n", "e"}),
    ],
)
def test_each_key_kind_signs_a_proof_an_independent_verifier_accepts(
    kind: str, alg: str, members: set[str]
):
    """§4.2: typ dpop+jwt, the key's default alg, the public jwk only; PyJWT verifies it."""
    dpop = dpop_settings(key_pem(kind))
    assert dpop is not None
    assert dpop.alg == alg
    url = "https://API.example.com:443/v1/items?page=2#top"
    proof = dpop.proof("GET", url, time.time(), ath_of("token-1"))
    header = header_of(proof)
    assert header["alg"] == alg
    assert set(header["jwk"]) == members  # type: ignore[arg-type]
    verify(proof, htm="GET", htu="https://api.example.com/v1/items", access_token="token-1")


@pytest.mark.parametrize("alg", ["PS384", "PS512", "RS256", "RS384", "RS512"])
def test_dpop_alg_chooses_another_algorithm_the_key_allows(alg: str):
    dpop = dpop_settings(key_pem("rsa"), alg)
    assert dpop is not None
    verify(dpop.proof("POST", URL, time.time()), htm="POST", htu=URL)


def test_a_proof_never_repeats():
    """§4.2 jti: unique (128 random bits); two proofs for one request differ."""
    dpop = dpop_settings(key_pem("ec"))
    assert dpop is not None
    proofs = {dpop.proof("GET", URL, 0) for _ in range(200)}
    jtis = {json.loads(base64.urlsafe_b64decode(p.split(".")[1] + "==="))["jti"] for p in proofs}
    assert len(proofs) == len(jtis) == 200


def test_thumbprint_follows_rfc7638_example():
    """RFC 7638 §3.1: the example RSA key's thumbprint."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
        "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
        "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
        "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    material = KeyMaterial("RSA", ("PS256",), {"e": "AQAB", "kty": "RSA", "n": n}, b"", None)  # type: ignore[arg-type]
    assert material.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("kind", ["ec", "ed25519", "rsa"])
def test_thumbprint_agrees_with_joserfc(kind: str):
    from joserfc.jwk import JWKRegistry  # noqa: PLC0415

    dpop = dpop_settings(key_pem(kind))
    assert dpop is not None
    jwk = header_of(dpop.proof("GET", URL, 0))["jwk"]
    assert JWKRegistry.import_key(jwk).thumbprint() == dpop.thumbprint  # type: ignore[arg-type]


def test_key_forms_pem_bytes_text_path_and_pathlike(tmp_path: Path):
    """dpop_key=: PEM bytes, PEM text, a path (str or Path): the same key, the same thumbprint."""
    pem = key_pem("ec")
    path = tmp_path / "dpop.pem"
    path.write_bytes(pem)
    made = [dpop_settings(form) for form in (pem, pem.decode(), str(path), path)]
    assert len({d.thumbprint for d in made if d is not None}) == 1


def test_generated_key_is_the_processs_own():
    """dpop_key=True: one EC P-256 key per process, shared by every object made with it."""
    first, second = dpop_settings(True), dpop_settings(True)
    assert first is not None
    assert second is not None
    assert first.alg == "ES256"
    assert first.thumbprint == second.thumbprint == generated_key().thumbprint


@pytest.mark.parametrize(
    ("key", "alg", "allow", "message"),
    [
        (None, "ES256", False, "dpop_alg= was given without dpop_key="),
        (None, None, True, "dpop_allow_bearer=True was given without dpop_key="),
        (42, None, False, "not int"),
        ("/nonexistent/dpop.pem", None, False, "could not be read"),
        (b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", None, False,
         "not a PEM private key"),
        ("ec", "PS256", False, "dpop_alg='PS256' does not fit this EC P-256 key: use 'ES256'"),
        ("ed25519", "ES256", False, "use 'EdDSA' or 'Ed25519'"),
        ("rsa", "HS256", False, "does not fit this RSA 2048 key"),
        ("ec", None, "yes", "dpop_allow_bearer must be True or False"),
    ],
)  # fmt: skip
def test_bad_settings_say_what_to_do(key: object, alg: object, allow: object, message: str):
    if key in ("ec", "ed25519", "rsa"):
        key = key_pem(str(key))
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        dpop_settings(key, alg, allow)


def test_unusable_keys_are_refused_with_a_way_out():
    """An encrypted key, a small RSA key, a curve DPoP has no algorithm for: what to do instead."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigurationError, match="encrypted PEM key: give it unencrypted"):
        dpop_settings(encrypted)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match=r"RSA \(2048 bits or more\)"):
        dpop_settings(_pem(small))
    with pytest.raises(ConfigurationError, match=r"secp256k1.*openssl genpkey"):
        dpop_settings(_pem(ec.generate_private_key(ec.SECP256K1())))


def _pem(key: object) -> bytes:
    from tests.dpop_keys import pem  # noqa: PLC0415

    return pem(key)


def test_key_errors_never_quote_key_material(tmp_path: Path):
    """A broken key file: the error names the problem, never the bytes (they may be a key)."""
    secret_part = key_pem("ec").decode().splitlines()[2]
    broken = "-----BEGIN PRIVATE KEY-----\n" + secret_part + "\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigurationError) as info:
        dpop_settings(broken)
    assert secret_part not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "origin", "htu"),
    [
        ("https://API.Example.com:443/a/b?q=1#f", "https://api.example.com", "https://api.example.com/a/b"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://h:80/x", "http://h", "http://h/x"),
        ("https://[::1]:8443/p", "https://[::1]:8443", "https://[::1]:8443/p"),
        ("https://user:pw@h/p", "https://h", "https://h/p"),
    ],
)  # fmt: skip
def test_htu_is_scheme_host_port_and_path_only(url: str, origin: str, htu: str):
    """§4.2 htu: no query, no fragment; RFC 3986 §6.2.2-3 normalisation; no userinfo."""
    assert target(url) == (origin, htu)


@given(
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/%", max_size=30),
    query=st.text(alphabet="abc=&%+", max_size=20),
    fragment=st.text(alphabet="abc", max_size=5),
)
def test_htu_never_holds_query_or_fragment(path: str, query: str, fragment: str):
    url = f"https://h.example/{path}?{query}#{fragment}"
    origin, htu = target(url)
    assert origin == "https://h.example"
    assert htu == "https://h.example/" + path
    assert "?" not in htu
    assert "#" not in htu


@given(st.text(max_size=60))
def test_challenge_and_nonce_readers_never_raise(text: str):
    """What servers send is read tolerantly: any text is an answer, never an error."""
    assert isinstance(asks_for_nonce({"WWW-Authenticate": text}), bool)
    assert nonce_in(text) is None or isinstance(nonce_in(text), str)
    assert nonce_in(f"a.{text}.b") is None or isinstance(nonce_in(f"a.{text}.b"), str)


@pytest.mark.parametrize(
    ("challenge", "asks"),
    [
        ('DPoP error="use_dpop_nonce", error_description="Resource server requires nonce"', True),
        ('Bearer realm="x", DPoP error="use_dpop_nonce"', True),
        ("DPoP error=use_dpop_nonce", True),
        ('DPoP error="invalid_dpop_proof"', False),
        ('Bearer error="invalid_token"', False),
    ],
)
def test_nonce_challenge_is_recognised(challenge: str, asks: bool):
    """§9: the 401's WWW-Authenticate says error="use_dpop_nonce"."""
    assert asks_for_nonce({"www-authenticate": challenge}) is asks


def test_nonces_are_remembered_per_server_and_key_and_bounded():
    """§8.2, §9: the newest nonce of each server; invalid values are ignored; memory bounded."""
    a, b = dpop_settings(key_pem("ec")), dpop_settings(key_pem("ed25519"))
    assert a is not None
    assert b is not None
    assert a.heard("https://one.example/x", {"DPoP-Nonce": "n1"}) == "n1"
    assert a.heard("https://two.example/y", {"dpop-nonce": "n2"}) == "n2"
    assert a.heard("https://one.example/z", {"DPoP-Nonce": 'bad "quote'}) is None
    assert a.heard("https://one.example/z", {"Content-Type": "text/plain"}) is None
    assert nonce_in(a.proof("GET", "https://one.example/q", 0)) == "n1"
    assert nonce_in(a.proof("GET", "https://two.example/q", 0)) == "n2"
    assert nonce_in(b.proof("GET", "https://one.example/q", 0)) is None  # another key
    a.heard("https://one.example/", {"DPoP-Nonce": "n3"})
    assert nonce_in(a.proof("GET", "https://one.example/q", 0)) == "n3"
    for index in range(MAX_NONCES + 50):
        a.heard(f"https://host-{index}.example/", {"DPoP-Nonce": f"v{index}"})
    assert len(_nonces) == MAX_NONCES


def test_nonce_memory_is_thread_safe():
    dpop = dpop_settings(key_pem("ec"))
    assert dpop is not None

    def tell(worker: int) -> None:
        for index in range(300):
            dpop.heard(f"https://h{(worker * 300 + index) % 1500}.example/", {"DPoP-Nonce": "n"})

    threads = [threading.Thread(target=tell, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < len(_nonces) <= MAX_NONCES


def test_retry_only_for_a_nonce_the_proof_did_not_carry():
    dpop = dpop_settings(key_pem("ec"))
    assert dpop is not None
    dpop.heard(URL, {"DPoP-Nonce": "old"})
    proof = dpop.proof("POST", URL, 0)
    assert dpop.retry_with_nonce(proof, "new")
    assert not dpop.retry_with_nonce(proof, "old")
    assert not dpop.retry_with_nonce(proof, None)


def test_dpop_token_keeps_its_ath_and_authorization_scheme():
    """§7.1: Authorization: DPoP <token>; §4.2 ath, computed once per token."""
    token = Token("tok-123", expires_at=10.0, issued_at=0.0, token_type="DPoP")
    assert token.authorization == "DPoP tok-123"
    assert token.ath == ath_of("tok-123")
    assert Token("tok-123", expires_at=10.0, issued_at=0.0).ath == ""
    assert Token.from_json(token.to_json()) == token


def test_settings_travel_with_the_key_and_show_no_key():
    """Pickled, a key travels as PEM (like the secret); its repr shows the thumbprint only."""
    dpop = dpop_settings(key_pem("ed25519"), allow_bearer=True)
    assert dpop is not None
    revived = pickle.loads(pickle.dumps(dpop))
    assert revived == dpop
    assert revived.allow_bearer
    assert copy.deepcopy(dpop) is dpop
    assert "PRIVATE" not in repr(dpop)
    assert dpop.thumbprint in repr(dpop)
    assert revived.proof("GET", URL, 0) != dpop.proof("GET", URL, 0)


def test_auth_object_thumbprint_identity_and_repr(tmp_path: Path):
    """auth.dpop_thumbprint; the key is part of the identity; no key material in any repr."""
    pem = key_pem("ec")
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    plain = ClientCredentialsAuth(URL, "id", "secret")
    bound = ClientCredentialsAuth(URL, "id", "secret", dpop_key=str(path))
    other = ClientCredentialsAuth(URL, "id", "secret", dpop_key=key_pem("ed25519"))
    same = ClientCredentialsAuth(URL, "id", "secret", dpop_key=pem)
    lenient = ClientCredentialsAuth(URL, "id", "secret", dpop_key=pem, dpop_allow_bearer=True)
    assert plain.dpop_thumbprint is None
    assert bound.dpop_thumbprint == same.dpop_thumbprint != other.dpop_thumbprint
    keys = {a._manager.identity.key for a in (plain, bound, other, lenient)}
    assert len(keys) == 4
    assert bound._manager.identity.key == same._manager.identity.key
    texts = [repr(a) + repr(a._settings) + repr(a._manager.identity) for a in (bound, other)]
    private = json.dumps(sorted(PRIVATE_MEMBERS))
    for text in texts:
        assert "PRIVATE KEY" not in text
        assert pem.decode().splitlines()[1] not in text
    assert private  # the members a jwk must never carry


def test_dpop_proof_for_other_clients():
    """auth.dpop_proof(): a proof for an HTTP client chaveiro is not plugged into."""
    auth = ClientCredentialsAuth(URL, "id", "secret", dpop_key=key_pem("ec"))
    token = Token("opaque-token", expires_at=2e9, issued_at=0.0, token_type="DPoP")
    proof = auth.dpop_proof("get", "https://api.example.com/r?x=1", token)
    verify(proof, htm="GET", htu="https://api.example.com/r", access_token="opaque-token")
    with pytest.raises(ConfigurationError, match="needs DPoP: pass dpop_key="):
        ClientCredentialsAuth(URL, "id", "secret").dpop_proof("GET", URL)


def test_from_env_reads_dpop_key_for_every_adapter(tmp_path: Path):
    """<PREFIX>_DPOP_KEY: a path or the PEM text, for the generic class and every adapter."""
    from chaveiro.providers import PROVIDERS  # noqa: PLC0415

    path = tmp_path / "dpop.pem"
    path.write_bytes(key_pem("ec"))
    expected = dpop_settings(key_pem("ec"))
    assert expected is not None
    environ = {
        "OAUTH_TOKEN_URL": URL,
        "OAUTH_CLIENT_ID": "id",
        "OAUTH_CLIENT_SECRET": "secret",
        "OAUTH_DPOP_KEY": str(path),
    }
    made = ClientCredentialsAuth.from_env(environ=environ)
    assert made.dpop_thumbprint == expected.thumbprint
    environ["OAUTH_DPOP_KEY"] = key_pem("ec").decode()
    assert ClientCredentialsAuth.from_env(environ=environ).dpop_thumbprint == expected.thumbprint
    for name, adapter in PROVIDERS.items():
        prefix = adapter.env_prefix
        env = {f"{prefix}_{suffix}": "value-1234" for _, suffix, _ in adapter.env_fields}
        env[f"{prefix}_DPOP_KEY"] = str(path)
        if name == "cidadao":
            env[f"{prefix}_SCOPE"] = "api.read"
        for _, suffix, _ in adapter.env_fields:
            if suffix == "TOKEN_URL":
                env[f"{prefix}_TOKEN_URL"] = "https://idp.example.com/token"
        assert adapter.from_env(environ=env).dpop_thumbprint == expected.thumbprint, name
    assert os.environ.get("OAUTH_DPOP_KEY") is None
