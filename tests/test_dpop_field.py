"""DPoP where it meets the rest: redirects, bodies, get_token, caches, processes, mTLS,
telemetry and threads, over real HTTP against ``FakeTokenServer(dpop=True)``."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import requests

from chaveiro import ClientCredentialsAuth, FileCache, RedisCache, client_tls
from chaveiro.testing import FakeTokenServer
from tests._proxy import Proxy
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.dpop_keys import key_pem, verify
from tests.test_dpop_http import CLIENTS, Call, auth_for, claims_of, proof_of


@pytest.fixture(params=list(CLIENTS))
def call(request: pytest.FixtureRequest) -> Call:
    return CLIENTS[request.param]


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy() as running:
        yield running


@pytest.fixture
def server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(dpop=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        yield srv


# ---- redirects ----------------------------------------------------------------------------


def test_a_redirect_hop_to_the_same_server_gets_a_proof_of_its_own(
    server: FakeTokenServer, call: Call
):
    """§4.2: the hop is another request (its own htu and jti), so it carries its own proof."""
    auth = auth_for(server)
    target = server.api_url("/api/next")
    status, body = call(auth, "GET", server.api_url("/api/redirect") + "?to=" + quote(target))
    assert (status, body["path"]) == (200, "/api/next")
    first, hop = server.api_request_log[-2:]
    token = hop.headers["authorization"].partition(" ")[2]
    verify(proof_of(hop), htm="GET", htu=target, access_token=token)
    assert claims_of(proof_of(first))["jti"] != claims_of(proof_of(hop))["jti"]
    assert server.dpop_refusals == []


def test_a_redirect_hop_to_another_origin_gets_neither_token_nor_proof(
    server: FakeTokenServer, call: Call
):
    """The token and its proofs go to the origin the caller chose, not where it redirects."""
    auth = auth_for(server)
    elsewhere = server.api_url("/api/next").replace("127.0.0.1", "localhost")
    status, _ = call(auth, "GET", server.api_url("/api/redirect") + "?to=" + quote(elsewhere))
    assert status == 401
    hop = server.api_request_log[-1]
    assert hop.headers["host"].startswith("localhost")
    assert "authorization" not in hop.headers
    assert "dpop" not in hop.headers


def test_a_body_that_cannot_be_sent_again_is_not_resent_on_a_nonce_challenge():
    """A streamed body: the nonce 401 goes back to the caller (and the next request has it)."""
    with FakeTokenServer(dpop=True, dpop_nonce=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        auth = auth_for(srv)
        with requests.Session() as session:
            session.auth = auth
            assert session.get(srv.api_url(), timeout=10).status_code == 200
            srv.rotate_dpop_nonce()
            streamed = session.post(srv.api_url(), data=iter([b"a", b"b"]), timeout=10)
            assert streamed.status_code == 401
            assert session.post(srv.api_url(), data=iter([b"a"]), timeout=10).status_code == 200


# ---- tokens for other uses ---------------------------------------------------------------


def test_get_token_and_dpop_proof_for_a_client_of_ones_own(server: FakeTokenServer):
    """get_token() gives the DPoP token; dpop_proof() the proof to send with it."""
    auth = auth_for(server)
    token = auth.get_token()
    assert token.token_type == "DPoP"
    assert token.authorization.startswith("DPoP ")
    url = server.api_url("/api/own")
    headers = {"Authorization": token.authorization, "DPoP": auth.dpop_proof("GET", url, token)}
    assert requests.get(url + "?q=1", headers=headers, timeout=10).status_code == 200


@pytest.mark.anyio
async def test_aget_token_is_a_dpop_token(server: FakeTokenServer):
    auth = auth_for(server)
    token = await auth.aget_token()
    assert token.token_type == "DPoP"
    assert claims_of(token.access_token)["cnf"]["jkt"] == auth.dpop_thumbprint
    verify(proof_of(server.token_request_log[-1]), htm="POST", htu=server.oauth_token_url)


# ---- caches and processes ----------------------------------------------------------------


def test_a_file_cache_shares_a_token_between_processes_with_one_key_file(
    server: FakeTokenServer, tmp_path: Path
):
    """The key is part of the identity: another process with the same key file reuses the
    token; with dpop_key=True each process has its own key, so its own token."""
    key_file = tmp_path / "dpop.pem"
    key_file.write_bytes(key_pem("ec"))
    cache_dir = tmp_path / "cache"
    auth = auth_for(server, str(key_file), cache=FileCache(cache_dir))
    assert auth.get_token()
    code = (
        "import sys, requests\n"
        "from chaveiro import ClientCredentialsAuth, FileCache\n"
        "auth = ClientCredentialsAuth(sys.argv[1], sys.argv[2], sys.argv[3],"
        " dpop_key=True if sys.argv[4] == 'generate' else sys.argv[4],"
        " cache=FileCache(sys.argv[5]))\n"
        "print(requests.get(sys.argv[6], auth=auth, timeout=10).status_code)\n"
    )

    def in_another_process(key: str) -> str:
        args = [server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, key, str(cache_dir)]
        done = subprocess.run(
            [sys.executable, "-c", code, *args, server.api_url()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert in_another_process(str(key_file)) == "200"
    assert server.token_requests == 1
    assert in_another_process("generate") == "200"
    assert server.token_requests == 2


def test_a_redis_cache_shares_a_token_between_auth_objects_with_one_key(
    server: FakeTokenServer, redis_url: str
):
    first = auth_for(server, key_pem("ec"), cache=RedisCache(redis_url))
    second = auth_for(server, key_pem("ec"), cache=RedisCache(redis_url))
    third = auth_for(server, key_pem("ed25519"), cache=RedisCache(redis_url))
    assert first.get_token() == second.get_token() != third.get_token()
    assert server.token_requests == 2
    assert second.get_token().token_type == "DPoP"


def test_a_pickled_auth_object_carries_its_generated_key(server: FakeTokenServer):
    """A generated key travels in the pickle, like the secret: the copy is the same identity
    and its proofs are accepted for the token bound to the original's key."""
    auth = auth_for(server, True)
    token = auth.get_token()
    code = (
        "import pickle, sys, requests\n"
        "auth = pickle.loads(sys.stdin.buffer.read())\n"
        "print(auth.dpop_thumbprint)\n"
        "print(requests.get(sys.argv[1], auth=auth, timeout=10).status_code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, server.api_url()],
        input=pickle.dumps(auth),
        capture_output=True,
        timeout=60,
        check=True,
    )
    thumbprint, status = done.stdout.decode().split()
    assert (thumbprint, status) == (auth.dpop_thumbprint, "200")
    copied = pickle.loads(pickle.dumps(auth))
    assert copied.get_token() == token
    assert server.token_requests == 2  # the other process had no shared cache


# ---- mTLS and DPoP together --------------------------------------------------------------


def test_mtls_and_dpop_bind_one_token_to_both(tmp_path: Path):
    """A token bound to the client certificate (RFC 8705) and to the DPoP key (RFC 9449)."""
    with FakeTokenServer(mtls=True, dpop=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        cert = srv.issue_client_cert("app.example")
        tls = client_tls(cert.to_pkcs12("pw"), "pw", verify=srv.ca_file)
        auth = auth_for(srv, client_cert=tls)
        with requests.Session() as session:
            session.auth, session.cert = auth, tls.requests_cert
            response = session.get(srv.api_url(), verify=tls.verify, timeout=10)
        assert response.status_code == 200, response.text
        token = srv.api_request_log[-1].headers["authorization"].partition(" ")[2]
        assert claims_of(token)["cnf"] == {"x5t#S256": cert.thumbprint, "jkt": auth.dpop_thumbprint}
        plain = ClientCredentialsAuth(
            srv.oauth_token_url, CLIENT_ID, CLIENT_SECRET, client_cert=tls
        )
        assert plain._manager.identity.key != auth._manager.identity.key
        tls.close()


# ---- telemetry ---------------------------------------------------------------------------


def test_telemetry_holds_no_key_and_no_proof(server: FakeTokenServer):
    """Spans and metrics of DPoP fetches name no key, thumbprint, proof or token."""
    from tests.test_telemetry import _EXPORTER, _READER, _install_sdk  # noqa: PLC0415

    _install_sdk()
    _EXPORTER.clear()
    _READER.get_metrics_data()
    with FakeTokenServer(dpop=True, dpop_nonce=True) as srv:
        srv.add_client(CLIENT_ID, CLIENT_SECRET)
        auth = auth_for(srv)
        with requests.Session() as session:
            session.auth = auth
            assert session.get(srv.api_url(), timeout=10).status_code == 200
        proofs = [r.headers["dpop"] for r in [*srv.token_request_log, *srv.api_request_log]]
        tokens = srv.issued_tokens
    spans = _EXPORTER.get_finished_spans()
    assert spans
    data = _READER.get_metrics_data()
    texts = [span.to_json() for span in spans] + ([data.to_json()] if data else [])
    pem_lines = key_pem("ec").decode().splitlines()[1:-1]
    secrets = [*proofs, *tokens, *pem_lines, str(auth.dpop_thumbprint)]
    for secret in secrets:
        for text in texts:
            assert secret not in text
    _EXPORTER.clear()


# ---- threads -----------------------------------------------------------------------------


def test_threads_share_one_token_and_each_request_its_own_proof(server: FakeTokenServer):
    auth = auth_for(server)
    statuses: list[int] = []

    def work() -> None:
        with requests.Session() as session:
            session.auth = auth
            statuses.extend(session.get(server.api_url(), timeout=10).status_code for _ in range(5))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 40
    assert server.token_requests == 1
    jtis = {claims_of(r.headers["dpop"])["jti"] for r in server.api_request_log}
    assert len(jtis) == 40


def test_aiohttp_tasks_share_one_token(server: FakeTokenServer):
    auth = auth_for(server)

    async def main() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:

            async def one() -> int:
                async with session.get(server.api_url()) as response:
                    return response.status

            return list(await asyncio.gather(*(one() for _ in range(30))))

    assert asyncio.run(main()) == [200] * 30
    assert server.token_requests == 1
    assert server.dpop_refusals == []


# ---- forward proxies -----------------------------------------------------------------------


def test_dpop_through_a_forward_proxy_with_a_redirect(
    hx: ModuleType, proxy: Any, server: FakeTokenServer, monkeypatch: pytest.MonkeyPatch
):
    """Through a forward proxy (absolute URLs), the token request, the API request and its
    redirect hop each carry a proof for the URL they name."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    auth = auth_for(server)
    target = server.api_url("/api/next")
    start = server.api_url("/api/redirect") + "?to=" + quote(target)
    with hx.Client(auth=auth, follow_redirects=True, timeout=10) as client:
        assert client.get(start).status_code == 200
    with requests.Session() as session:
        session.auth = auth
        assert session.get(start, timeout=10).status_code == 200
    assert proxy.seen.count(f"GET {target}") == 2
    assert f"POST {server.oauth_token_url}" in proxy.seen
    assert server.dpop_refusals == []
    assert server.dpop_proofs == 3  # the token request's and each hop's (/api/redirect: none)


def test_a_users_trace_hears_every_request_of_a_dpop_call(hx: ModuleType, server: FakeTokenServer):
    """The hops' proofs ride on the request's ``trace``: the user's own still gets every event."""
    events: list[str] = []
    start = server.api_url("/api/redirect") + "?to=" + quote(server.api_url("/api/next"))
    with hx.Client(auth=auth_for(server), follow_redirects=True, timeout=10) as client:
        trace = {"trace": lambda event, info: events.append(event)}
        assert client.get(start, extensions=trace).status_code == 200
    sent = [e for e in events if e.endswith("send_request_headers.started")]
    assert len(sent) == 3  # the token request, the request, its hop
    assert server.dpop_refusals == []
