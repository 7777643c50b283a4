"""Auth objects travel: pickle and deepcopy carry settings, and the copy is the same identity.

Same process: the copy uses the token already held. Another process (real spawn and
forkserver pools, a ProcessPoolExecutor, over real HTTP): the copy works at once, and
when a shared cache holds a fresh token it sends no token request of its own.
"""

from __future__ import annotations

import base64
import copy
import json
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chaveiro import (
    BitizeAuth,
    CidadaoAuth,
    ClientCredentialsAuth,
    FileCache,
    RedisCache,
    ScorePositivoAuth,
    StackSpotAuth,
    TokenCache,
    client_tls,
)
from chaveiro._discovery import discovered
from chaveiro.providers import PROVIDERS
from chaveiro.testing import FakeTokenServer
from chaveiro.testing.pytest_plugin import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from tests._travel_worker import call_api, call_api_with_aiohttp, fetch_token

Build = Callable[[FakeTokenServer], ClientCredentialsAuth]
ID, SECRET = TEST_CLIENT_ID, TEST_CLIENT_SECRET

BUILDS: dict[str, Build] = {
    "ClientCredentialsAuth()": lambda s: ClientCredentialsAuth(s.oauth_token_url, ID, SECRET),
    "StackSpotAuth()": lambda s: StackSpotAuth(ID, SECRET, token_url=s.stackspot_token_url("t")),
    "CidadaoAuth()": lambda s: CidadaoAuth(ID, SECRET, "test.read", token_url=s.cidadao_token_url),
    "BitizeAuth()": lambda s: BitizeAuth(ID, SECRET, token_url=s.bitize_token_url),
    "ScorePositivoAuth()": lambda s: ScorePositivoAuth(
        ID, SECRET, token_url=s.scorepositivo_token_url
    ),
    "ClientCredentialsAuth.from_env()": lambda s: ClientCredentialsAuth.from_env(),
    "StackSpotAuth.from_env()": lambda s: StackSpotAuth.from_env(),
    "CidadaoAuth.from_env()": lambda s: CidadaoAuth.from_env(),
    "BitizeAuth.from_env()": lambda s: BitizeAuth.from_env(),
    "ScorePositivoAuth.from_env()": lambda s: ScorePositivoAuth.from_env(),
    "ClientCredentialsAuth.from_issuer()": lambda s: ClientCredentialsAuth.from_issuer(
        s.issuer, ID, SECRET
    ),
}
"""Every auth class, built every way (fake_provider_env sets the variables from_env reads)."""


@pytest.fixture(autouse=True)
def _forget_discovered_issuers() -> Iterator[None]:
    discovered.clear()
    yield
    discovered.clear()


def build(name: str, server: FakeTokenServer) -> ClientCredentialsAuth:
    return BUILDS[name](server)


def test_every_adapter_is_covered():
    classes = {name.split("(")[0].split(".")[0] for name in BUILDS}
    assert classes == {"ClientCredentialsAuth", *(cls.__name__ for cls in PROVIDERS.values())}


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_copy_in_the_same_process_uses_the_held_token(fake_provider_env: FakeTokenServer, name):
    """pickle and deepcopy, of the auth object and of a session carrying it: no token request."""
    server = fake_provider_env
    auth = build(name, server)
    token = auth.get_token()
    session = requests.Session()
    session.auth = auth
    copies = [
        pickle.loads(pickle.dumps(auth)),
        copy.deepcopy(auth),
        copy.copy(auth),
        pickle.loads(pickle.dumps(session)).auth,
        copy.deepcopy(session).auth,
    ]
    for other in copies:
        assert type(other) is type(auth)
        assert repr(other) == repr(auth)
        assert (other.token_url, other.client_id, other.scope) == (
            auth.token_url,
            auth.client_id,
            auth.scope,
        )
        assert other.get_token() == token
        assert requests.get(server.api_url(), auth=other, timeout=10).status_code == 200
    assert server.token_requests == 1
    session.close()


@pytest.mark.parametrize("name", list(BUILDS))
def test_the_pickled_form_holds_settings_only(fake_provider_env: FakeTokenServer, name):
    """No token travels; the client secret does (README, security notes); it stays small."""
    auth = build(name, fake_provider_env)
    token = auth.get_token()
    data = pickle.dumps(auth)
    assert token.access_token.encode() not in data
    assert SECRET.encode() in data
    assert len(data) < 1500
    assert SECRET not in repr(pickle.loads(data))


def test_private_key_jwt_travels(server: FakeTokenServer):
    """The private key is a setting too: a copy in another process signs its own assertion."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server.add_client("jwt-client", "unused-secret", public_key_pem=public)
    auth = ClientCredentialsAuth(
        server.oauth_token_url,
        "jwt-client",
        auth_method="private_key_jwt",
        private_key=pem,
        signing_alg="ES256",
    )
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        [(_, codes)] = pool.starmap(call_api, [(auth, server.api_url())])
        pool.close()
        pool.join()
    assert codes == [200, 200]
    assert server.token_requests == 1
    assert server.token_request_log[0].fields["client_assertion_type"].endswith("jwt-bearer")


# ---- other processes ----------------------------------------------------------------------

START_METHODS = ["spawn", "forkserver"]


@pytest.fixture(params=["FileCache", "RedisCache"])
def shared_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenCache]:
    if request.param == "FileCache":
        yield FileCache(tmp_path / "tokens")
        return
    cache = RedisCache(request.getfixturevalue("redis_url"))
    yield cache
    cache.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_workers_use_the_token_in_a_shared_cache(
    fake_token_server: FakeTokenServer, shared_cache: TokenCache, method: str
):
    """A fresh token in a shared cache: workers of a spawn or forkserver pool ask for none."""
    server = fake_token_server
    auth = ClientCredentialsAuth(server.oauth_token_url, ID, SECRET, cache=shared_cache)
    auth.get_token()
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        results = pool.starmap(call_api, [(auth, server.api_url())] * 4)
        pool.close()
        pool.join()
    assert [codes for _, codes in results] == [[200, 200]] * 4
    assert server.token_requests == 1


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_workers_work_at_once_with_the_default_cache(
    fake_token_server: FakeTokenServer, method: str
):
    """With the in-process cache, each worker process asks for one token, once."""
    server = fake_token_server
    auth = ClientCredentialsAuth(server.oauth_token_url, ID, SECRET)
    auth.get_token()
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        results = pool.starmap(call_api, [(auth, server.api_url())] * 6)
        pool.close()
        pool.join()
    assert [codes for _, codes in results] == [[200, 200]] * 6
    workers = {pid for pid, _ in results}
    assert server.token_requests == 1 + len(workers)


def test_process_pool_executor_with_a_session_carrying_the_auth(
    fake_token_server: FakeTokenServer, tmp_path: Path
):
    """A requests.Session with our auth, sent to a ProcessPoolExecutor, reuses the file cache."""
    server = fake_token_server
    auth = ClientCredentialsAuth(
        server.oauth_token_url, ID, SECRET, cache=FileCache(tmp_path / "tokens")
    )
    auth.get_token()
    session = requests.Session()
    session.auth = auth
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as executor:
        futures = [executor.submit(call_api, session, server.api_url()) for _ in range(4)]
        results = [future.result(timeout=60) for future in futures]
    assert [codes for _, codes in results] == [[200, 200]] * 4
    assert server.token_requests == 1
    session.close()


def test_a_client_certificate_travels(tmp_path: Path):
    """An mTLS auth object goes to a spawn worker, which fetches a certificate-bound token."""
    with FakeTokenServer(mtls=True) as server:
        server.add_client("pix", tls_client_auth_san_dns="pix.example")
        cert = server.issue_client_cert("pix.example", common_name="Empresa Pix")
        p12 = tmp_path / "empresa.p12"
        p12.write_bytes(cert.to_pkcs12("senha-do-pfx"))
        tls = client_tls(p12, "senha-do-pfx", verify=server.ca_file)
        auth = ClientCredentialsAuth(
            server.oauth_token_url, "pix", auth_method="tls_client_auth", client_cert=tls
        )
        same = copy.deepcopy(auth)
        assert same.tls is not None
        assert same.tls.thumbprint == cert.thumbprint
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            [token] = pool.map(fetch_token, [auth])
            pool.close()
            pool.join()
        assert server.token_requests == 1
        assert server.token_request_log[0].client_cert_thumbprint == cert.thumbprint
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))
        assert claims["cnf"] == {"x5t#S256": cert.thumbprint}
        tls.close()


def test_an_aiohttp_worker_uses_the_shared_token(fake_token_server: FakeTokenServer, tmp_path):
    """The copy is an aiohttp middleware in the worker too, with the file cache's token."""
    pytest.importorskip("aiohttp")
    server = fake_token_server
    auth = ClientCredentialsAuth(
        server.oauth_token_url, ID, SECRET, cache=FileCache(tmp_path / "tokens")
    )
    auth.get_token()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.starmap(call_api_with_aiohttp, [(auth, server.api_url())] * 2) == [200, 200]
        pool.close()
        pool.join()
    assert server.token_requests == 1
