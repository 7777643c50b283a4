"""Token values, identities and the expiry rules."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import math
import pickle

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from chaveiro import ClientCredentialsAuth
from chaveiro._token import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    Identity,
    Token,
    choose_expiry,
    jwt_claims,
    normalize_scope,
)

NOW = 1_800_000_000.0


def jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_repr_shows_a_fingerprint_not_the_token():
    """repr() of a token never contains the access or refresh token."""
    token = Token("the-access-token-xyz", NOW + 60, NOW, refresh_token="the-refresh-token")
    text = repr(token) + str(token)
    assert "the-access-token-xyz" not in text
    assert "the-refresh-token" not in text
    assert token.fingerprint in text


def test_token_is_frozen():
    """Tokens cannot be changed after creation."""
    token = Token("t", NOW + 60, NOW)
    with pytest.raises(AttributeError):
        token.access_token = "other"  # type: ignore[misc]


@given(
    lifetime=st.floats(min_value=0.001, max_value=1e7),
    leeway=st.floats(min_value=0, max_value=1e6),
)
def test_renewal_is_never_earlier_than_half_the_lifetime(lifetime: float, leeway: float):
    """The leeway is capped at half the lifetime, so short tokens are not fetched per call."""
    token = Token("t", NOW + lifetime, NOW)
    renew_at = token.renew_at(leeway)
    assert renew_at >= NOW + lifetime / 2 - 1e-6
    assert renew_at <= token.expires_at
    assert token.is_fresh(NOW, leeway) == (renew_at > NOW)


def test_default_leeway_renews_thirty_seconds_early():
    """A one-hour token is renewed 30 s before it expires."""
    token = Token("t", NOW + 3600, NOW)
    assert token.is_fresh(NOW + 3569, 30)
    assert not token.is_fresh(NOW + 3571, 30)
    assert token.is_valid(NOW + 3571)


def test_expires_in_wins():
    """expires_in sets the expiry when present and sane."""
    assert choose_expiry(NOW, expires_in=3600, access_token=jwt({"exp": NOW + 10})) == NOW + 3600


def test_expires_in_as_numeric_string():
    """A numeric string expires_in (as some servers send) is accepted."""
    assert choose_expiry(NOW, expires_in=" 120 ") == NOW + 120


def test_jwt_exp_is_used_when_expires_in_is_missing():
    """Without expires_in, the JWT exp claim sets the expiry."""
    assert choose_expiry(NOW, access_token=jwt({"exp": NOW + 900})) == NOW + 900


def test_provider_field_comes_before_jwt_exp():
    """A provider's own expiry field is preferred to the JWT exp claim."""
    got = choose_expiry(NOW, provider_expires_at=NOW + 50, access_token=jwt({"exp": NOW + 900}))
    assert got == NOW + 50


def test_default_lifetime_with_a_warning(caplog: pytest.LogCaptureFixture):
    """Nothing usable gives the default lifetime and a warning."""
    with caplog.at_level(logging.WARNING, logger="chaveiro"):
        assert choose_expiry(NOW, access_token="opaque") == NOW + DEFAULT_LIFETIME
    assert any("does not say when" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [-5, 0, "soon", None, True, float("nan"), float("inf"), [], {}])
def test_nonsense_expires_in_falls_back(bad: object, caplog: pytest.LogCaptureFixture):
    """Negative, zero or non-numeric expires_in is skipped with a warning."""
    with caplog.at_level(logging.WARNING, logger="chaveiro"):
        got = choose_expiry(NOW, expires_in=bad, access_token=jwt({"exp": NOW + 77}))
    assert got == NOW + 77
    if bad is not None:
        assert caplog.records


def test_absurd_lifetime_is_clamped(caplog: pytest.LogCaptureFixture):
    """An absurdly large lifetime is clamped, with a warning: never cached forever."""
    with caplog.at_level(logging.WARNING, logger="chaveiro"):
        assert choose_expiry(NOW, expires_in=10**30) == NOW + MAX_LIFETIME
    assert caplog.records


@given(
    expires_in=st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50), st.booleans()
    ),
    exp=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=20)),
)
def test_expiry_is_always_future_and_bounded(expires_in: object, exp: object):
    """Whatever the server says, the expiry is in the future and at most MAX_LIFETIME away."""
    token = jwt({"exp": exp}) if exp is not None else "opaque"
    got = choose_expiry(NOW, expires_in=expires_in, access_token=token)
    assert math.isfinite(got)
    assert NOW < got <= NOW + MAX_LIFETIME


@given(st.text(max_size=200))
def test_jwt_claims_never_raises(text: str):
    """Decoding arbitrary text as a JWT gives claims or None, never an exception."""
    result = jwt_claims(text)
    assert result is None or isinstance(result, dict)


def test_jwt_claims_decodes_without_verifying():
    """A JWT's claims are read without checking its signature."""
    assert jwt_claims(jwt({"exp": 5, "sub": "x"})) == {"exp": 5, "sub": "x"}


def test_identity_key_ignores_scope_order_but_not_the_secret():
    """Scope order does not split the cache; a different secret does; no secret in the key."""
    a = Identity.of("https://idp/token", "id", "secret-one", "b a")
    b = Identity.of("https://idp/token", "id", "secret-one", "a b")
    c = Identity.of("https://idp/token", "id", "secret-two", "a b")
    assert a.key == b.key
    assert a.key != c.key
    assert "secret" not in a.key
    assert "secret-one" not in repr(a)


def test_identity_key_depends_on_extra_fields():
    """Different audience values get different tokens."""
    a = Identity.of("https://idp/token", "id", "s", None, {"audience": "x"})
    b = Identity.of("https://idp/token", "id", "s", None, {"audience": "y"})
    assert a.key != b.key


def test_identity_key_depends_on_the_client_certificate():
    """Two certificates for one client id are two identities; no certificate keeps the old key."""
    plain = Identity.of("https://idp/token", "id", "")
    one = Identity.of("https://idp/token", "id", "", thumbprint="thumb-one")
    two = Identity.of("https://idp/token", "id", "", thumbprint="thumb-two")
    assert len({plain.key, one.key, two.key}) == 3
    assert one != two
    assert one == Identity.of("https://idp/token", "id", "", thumbprint="thumb-one")
    assert Identity.of("https://idp/token", "id", "", thumbprint="") == plain
    digest = hashlib.sha256(b"chaveiro-secret\0").hexdigest()
    canonical = json.dumps(["https://idp/token", "id", "", [], digest])
    assert plain.key == hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _auth_of(**options: object) -> Identity:
    auth = ClientCredentialsAuth("https://idp.example/token", "id", **options)  # type: ignore[arg-type]
    return auth._manager.identity


def test_identity_depends_on_how_the_client_authenticates():
    """The auth method, the signing algorithm and the key id are part of the identity."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secret = "s3cret-0123456789-0123456789-0123456789"
    identities = [
        _auth_of(client_secret=secret),
        _auth_of(client_secret=secret, auth_method="client_secret_post"),
        _auth_of(client_secret=secret, auth_method="client_secret_jwt"),
        _auth_of(client_secret=secret, auth_method="client_secret_jwt", signing_alg="HS512"),
        _auth_of(client_secret=secret, auth_method="client_secret_jwt", key_id="k1"),
        _auth_of(private_key=pem, auth_method="private_key_jwt"),
        _auth_of(private_key=pem, auth_method="private_key_jwt", signing_alg="PS256"),
        _auth_of(private_key=pem, auth_method="private_key_jwt", key_id="k1"),
        _auth_of(private_key=pem, auth_method="private_key_jwt", key_id="k2"),
    ]
    assert len({identity.key for identity in identities}) == len(identities)
    # the algorithm a method signs with by default is the same identity as naming it
    default = _auth_of(private_key=pem, auth_method="private_key_jwt", signing_alg="RS256")
    assert default == identities[5]
    hs256 = _auth_of(client_secret=secret, auth_method="client_secret_jwt", signing_alg="HS256")
    assert hs256 == identities[2]
    # a key id means nothing without a JWT: it does not split a basic client's identity
    assert _auth_of(client_secret=secret, key_id="k1") == identities[0]


def test_identity_survives_pickling_and_copying():
    """A copy has the same identity, its key included, whatever the auth method."""
    auth = ClientCredentialsAuth(
        "https://idp.example/token",
        "id",
        "s3cret-0123456789-0123456789-0123456789",
        auth_method="client_secret_jwt",
        signing_alg="HS384",
        key_id="k1",
    )
    identity = auth._manager.identity
    for copied in (pickle.loads(pickle.dumps(auth)), copy.deepcopy(auth)):
        assert copied._manager.identity == identity
        assert copied._manager.identity.key == identity.key
    assert pickle.loads(pickle.dumps(identity)).key == identity.key


def test_normalize_scope():
    """Scopes become one space-separated string, duplicates dropped, order kept."""
    assert normalize_scope(["a", "b c", "a"]) == "a b c"
    assert normalize_scope("  ") is None
    assert normalize_scope(None) is None
