"""One object for httpx and httpx2: an ``Auth`` of each, whichever was imported first.

The whole suite also runs with httpx2 alone, under ``httpx2.alias_httpx()`` (the
``httpx2`` session of noxfile.py); these tests cover what only a process with
both libraries has: the two sharing one token and one single flight, and the
order in which chaveiro and the libraries are imported.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import anyio
import pytest
import requests

from chaveiro import (
    ClientCredentialsAuth,
    CredentialsRejectedError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
    client_tls,
)
from chaveiro.testing import FakeTokenServer
from tests._recorder import Recorder, Seen
from tests.conftest import CLIENT_ID, CLIENT_SECRET

httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its standard output."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


_USE = """
from chaveiro.testing import FakeTokenServer
with FakeTokenServer() as server:
    server.add_client("app", "secret")
    auth = ClientCredentialsAuth(server.oauth_token_url, "app", "secret")
    with httpx2.Client(auth=auth) as client:
        codes = [client.get(server.api_url()).status_code for _ in range(3)]
    print(isinstance(auth, httpx2.Auth), codes, server.token_requests)
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import httpx2\nfrom chaveiro import ClientCredentialsAuth",
        "from chaveiro import ClientCredentialsAuth\nimport httpx2",
        "import httpx2\nhttpx2.alias_httpx()\nimport httpx\nfrom chaveiro import *",
        "import sys\nsys.modules['httpx'] = None  # httpx not installed\n"
        "from chaveiro import ClientCredentialsAuth\nimport httpx2",
    ],
    ids=["httpx2-first", "chaveiro-first", "alias_httpx", "without-httpx"],
)
def test_an_auth_object_is_an_httpx2_auth_whatever_the_import_order(imports: str):
    if "alias_httpx" in imports and not hasattr(httpx2, "alias_httpx"):
        pytest.skip(f"httpx2 {httpx2.__version__} has no alias_httpx() yet")
    assert _run(f"{imports}\n{_USE}").split() == ["True", "[200,", "200,", "200]", "1"]


def test_chaveiro_imports_neither_library():
    loaded = _run(
        "import sys\nfrom chaveiro import ClientCredentialsAuth\n"
        "ClientCredentialsAuth('https://idp.example/token', 'id', 'secret')\n"
        "print(sorted(m for m in ('httpx', 'httpx2', 'httpcore', 'httpcore2') if m in sys.modules))"
    )
    assert loaded.strip() == "[]"


def test_one_object_is_an_auth_of_both(make_auth):
    auth = make_auth()
    assert isinstance(auth, httpx.Auth)
    assert isinstance(auth, httpx2.Auth)
    assert isinstance(auth, requests.auth.AuthBase)


def test_httpx_httpx2_and_requests_share_one_token(server: FakeTokenServer, make_auth):
    auth = make_auth()
    with httpx.Client(auth=auth) as one, httpx2.Client(auth=auth) as two:
        for _ in range(5):
            assert one.get(server.api_url()).status_code == 200
            assert two.get(server.api_url()).status_code == 200
            assert requests.get(server.api_url(), auth=auth, timeout=5).status_code == 200
    assert server.token_requests == 1


def test_threads_on_both_libraries_share_one_flight(server: FakeTokenServer, make_auth):
    """A slow token endpoint, 16 threads on two libraries: one token request."""
    server.token_delay = 0.3
    auth = make_auth()
    codes: list[int] = []
    start = threading.Barrier(16)

    def call(library: ModuleType) -> None:
        with library.Client(auth=auth) as client:
            start.wait()
            codes.append(client.get(server.api_url()).status_code)

    threads = [threading.Thread(target=call, args=(lib,)) for lib in (httpx, httpx2) * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [200] * 16
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_tasks_on_both_libraries_share_one_flight(server: FakeTokenServer, make_auth):
    server.token_delay = 0.2
    auth = make_auth()
    codes: list[int] = []
    async with httpx.AsyncClient(auth=auth) as one, httpx2.AsyncClient(auth=auth) as two:

        async def call(client: httpx.AsyncClient | httpx2.AsyncClient) -> None:
            codes.append((await client.get(server.api_url())).status_code)

        async with anyio.create_task_group() as tasks:
            for _ in range(50):
                tasks.start_soon(call, one)
                tasks.start_soon(call, two)
    assert codes == [200] * 100
    assert server.token_requests == 1


# ---- each library alone: the behaviours users rely on ------------------------------------


def test_a_revoked_token_is_renewed_and_the_request_replayed_once(
    hx: ModuleType, server: FakeTokenServer, make_auth
):
    auth = make_auth()
    with hx.Client(auth=auth) as client:
        assert client.get(server.api_url()).status_code == 200
        server.revoke_all()
        response = client.post(server.api_url(), content=b"payload")
    assert response.status_code == 200
    assert server.token_requests == 2
    assert auth.stats.replayed == 1


@pytest.mark.anyio
async def test_aget_token_through_the_users_async_client(
    hx: ModuleType, server: FakeTokenServer, make_auth
):
    requests_seen: list[str] = []

    async def hook(request: object) -> None:
        requests_seen.append(str(request.url))  # type: ignore[attr-defined]

    async with hx.AsyncClient(event_hooks={"request": [hook]}) as client:
        token = await make_auth().aget_token(client=client)
    assert token.access_token in server.issued_tokens
    assert requests_seen == [server.oauth_token_url]


def test_a_hung_token_endpoint_is_a_typed_error(hx: ModuleType, server: FakeTokenServer, make_auth):
    server.token_delay = 2.0
    with (
        hx.Client(auth=make_auth(max_attempts=1), timeout=0.3) as client,
        pytest.raises(TokenEndpointUnreachableError, match="did not answer in time"),
    ):
        client.get(server.api_url())


def test_a_raise_for_status_hook_cannot_hide_the_typed_error(
    hx: ModuleType, server: FakeTokenServer
):
    auth = ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, "wrong-secret")

    def check(response: object) -> None:
        response.raise_for_status()  # type: ignore[attr-defined]

    with (
        hx.Client(auth=auth, event_hooks={"response": [check]}) as client,
        pytest.raises(CredentialsRejectedError),
    ):
        client.get(server.api_url())


def test_a_redirect_of_the_token_request_reaches_nobody(hx: ModuleType):
    with Recorder() as landing:

        def moved(seen: Seen) -> tuple[int, dict[str, str], bytes]:
            return 308, {"Location": landing.url("/token")}, b""

        with Recorder(moved) as endpoint:
            auth = ClientCredentialsAuth(
                endpoint.url("/token"), CLIENT_ID, CLIENT_SECRET, max_attempts=1
            )
            with (
                hx.Client(auth=auth, follow_redirects=True) as client,
                pytest.raises(TokenEndpointError, match="308"),
            ):
                client.get(endpoint.url("/api"))
    assert landing.seen == []


def test_mutual_tls_with_a_certificate_bound_token(hx: ModuleType, tmp_path: Path):
    with FakeTokenServer(mtls=True) as bank:
        cert = bank.issue_client_cert("company.example", common_name="company")
        bank.add_client("pix", tls_client_auth_subject_dn=cert.subject_dn)
        (tmp_path / "company.p12").write_bytes(cert.to_pkcs12("password"))
        tls = client_tls(tmp_path / "company.p12", "password", verify=bank.ca_file)
        auth = ClientCredentialsAuth(
            bank.oauth_token_url, "pix", auth_method="tls_client_auth", client_cert=tls
        )
        with hx.Client(auth=auth, verify=tls.ssl_context) as client:
            assert client.get(bank.api_url()).status_code == 200
        assert bank.token_request_log[-1].client_cert_thumbprint == cert.thumbprint
        tls.close()
