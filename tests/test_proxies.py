"""Token requests through a real forward proxy, with every client and every way to name it.

A ``CONNECT`` proxy on 127.0.0.1 stands in front of an HTTPS token server with
a private CA, and forwards plain HTTP. Each test checks what went through the
proxy, and that the token server issued one token. The redirect guard holds
through the proxy: a token endpoint's redirect sends nothing to its target.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from types import ModuleType
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
import trustme

from chaveiro import ClientCredentialsAuth, TokenEndpointError
from chaveiro.testing import FakeTokenServer
from tests._proxy import Proxy
from tests._recorder import Recorder, Seen
from tests.conftest import CLIENT_ID, CLIENT_SECRET

pytestmark = pytest.mark.usefixtures("_clean_environment")


@pytest.fixture
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, and no CA bundle that would override a session's own ``verify``."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy() as running:
        yield running


@pytest.fixture
def trusted(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA) -> Iterator[str]:
    with ca.cert_pem.tempfile() as path:
        yield path


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _auth(srv: FakeTokenServer) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(srv.oauth_token_url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def api(server_context: ssl.SSLContext) -> Iterator[Recorder]:
    """An HTTPS API of its own origin, so that a tunnel to the token server is the token's."""
    with Recorder(lambda seen: (200, {}, b"ok"), ssl_context=server_context) as recorder:
        yield recorder


def _tunnelled(proxy: Proxy, srv: FakeTokenServer, api: Recorder) -> None:
    """The token request and the API calls went through the proxy, each in its own tunnel."""
    token_tunnel = f"CONNECT 127.0.0.1:{_port(srv.url)}"
    api_tunnel = f"CONNECT 127.0.0.1:{_port(api.url())}"
    assert token_tunnel in proxy.seen, proxy.seen
    assert set(proxy.seen) == {token_tunnel, api_tunnel}, proxy.seen
    assert srv.token_requests == 1
    issued = srv.issued_tokens[0]
    assert [seen.headers.get("authorization") for seen in api.seen] == [f"Bearer {issued}"] * 2


# ---- the httpx family: httpx and httpx2 ----------------------------------------------------


@pytest.mark.parametrize("way", ["proxy=", "mounts=", "HTTPS_PROXY"])
def test_httpx_family_sends_the_token_request_through_the_proxy(
    hx: ModuleType,
    way: str,
    tls_server: FakeTokenServer,
    api: Recorder,
    proxy: Proxy,
    trusted: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
):
    options: dict[str, object] = {"verify": trusted}
    if way == "proxy=":
        options["proxy"] = proxy.url
    elif way == "mounts=":
        options["mounts"] = {"https://": hx.HTTPTransport(proxy=proxy.url, verify=trusted)}
    else:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with hx.Client(auth=_auth(tls_server), **options) as client:
        for _ in range(2):
            assert client.get(api.url()).status_code == 200
    _tunnelled(proxy, tls_server, api)


@pytest.mark.anyio
async def test_async_httpx_family_sends_the_token_request_through_the_proxy(
    hx: ModuleType,
    tls_server: FakeTokenServer,
    api: Recorder,
    proxy: Proxy,
    trusted: ssl.SSLContext,
):
    async with hx.AsyncClient(auth=_auth(tls_server), proxy=proxy.url, verify=trusted) as client:
        for _ in range(2):
            assert (await client.get(api.url())).status_code == 200
    _tunnelled(proxy, tls_server, api)


@pytest.mark.anyio
async def test_aget_token_through_a_client_with_a_proxy(
    hx: ModuleType, tls_server: FakeTokenServer, proxy: Proxy, trusted: ssl.SSLContext
):
    async with hx.AsyncClient(proxy=proxy.url, verify=trusted) as client:
        token = await _auth(tls_server).aget_token(client=client)
    assert token.access_token in tls_server.issued_tokens
    assert proxy.seen == [f"CONNECT 127.0.0.1:{_port(tls_server.url)}"]


def test_no_proxy_sends_the_token_request_direct(
    hx: ModuleType,
    tls_server: FakeTokenServer,
    api: Recorder,
    proxy: Proxy,
    trusted: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with hx.Client(auth=_auth(tls_server), verify=trusted) as client:
        assert client.get(api.url()).status_code == 200
    assert proxy.seen == []
    assert tls_server.token_requests == 1


def test_an_http_token_url_is_forwarded_by_the_proxy(
    hx: ModuleType, server: FakeTokenServer, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with hx.Client(auth=_auth(server)) as client:
        assert client.get(server.api_url()).status_code == 200
    assert proxy.seen == [f"POST {server.oauth_token_url}", f"GET {server.api_url()}"]
    assert server.token_requests == 1


# ---- the redirect guard holds through the proxy ----------------------------------------------


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_redirect_from_the_token_endpoint_sends_nothing_through_the_proxy(
    hx: ModuleType,
    scheme: str,
    proxy: Proxy,
    trusted: ssl.SSLContext,
    server_context: ssl.SSLContext,
):
    context = server_context if scheme == "https" else None
    with Recorder(ssl_context=context) as landing:
        moved = landing.url("/token")

        def redirect(seen: Seen) -> tuple[int, dict[str, str], bytes]:
            return 307, {"Location": moved}, b""

        with Recorder(redirect, ssl_context=context) as endpoint:
            auth = ClientCredentialsAuth(
                endpoint.url("/token"), CLIENT_ID, CLIENT_SECRET, max_attempts=1
            )
            client = hx.Client(auth=auth, proxy=proxy.url, verify=trusted, follow_redirects=True)
            with client, pytest.raises(TokenEndpointError) as raised:
                client.get(endpoint.url("/api"))
    assert "307" in str(raised.value)
    assert moved in str(raised.value)
    assert landing.seen == []
    assert [seen.path for seen in endpoint.seen] == ["/token"]
    landing_port = str(_port(moved))
    assert not [line for line in proxy.seen if landing_port in line], proxy.seen


# ---- requests and aiohttp -------------------------------------------------------------------


def test_requests_session_proxies_carry_the_token_request(
    tls_server: FakeTokenServer, api: Recorder, proxy: Proxy, ca_file: str
):
    session = requests.Session()
    session.proxies = {"https": proxy.url}
    session.verify = ca_file
    with session:
        session.auth = ClientCredentialsAuth(
            tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, session=session
        )
        for _ in range(2):
            assert session.get(api.url()).status_code == 200
    _tunnelled(proxy, tls_server, api)


def test_the_environment_proxy_carries_every_token_request_sync_and_async(
    tls_server: FakeTokenServer, proxy: Proxy, ca_file: str, monkeypatch: pytest.MonkeyPatch
):
    """get_token() and aget_token() without a client go the same way: the environment's."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    sync_auth = _auth(tls_server)
    assert sync_auth.get_token().access_token in tls_server.issued_tokens
    async_auth = ClientCredentialsAuth(
        tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, scope="other"
    )
    import anyio  # noqa: PLC0415

    token = anyio.run(async_auth.aget_token)
    assert token.access_token in tls_server.issued_tokens
    assert tls_server.token_requests == 2
    assert proxy.seen == [f"CONNECT 127.0.0.1:{_port(tls_server.url)}"] * 2


@pytest.mark.parametrize("where", ["session", "request"])
def test_aiohttp_token_request_follows_the_api_requests_proxy(
    where: str, tls_server: FakeTokenServer, api: Recorder, proxy: Proxy, trusted: ssl.SSLContext
):
    """A per-request proxy= too: the token request goes where the API request that needs it goes."""
    auth = _auth(tls_server)
    on_session = {"proxy": proxy.url} if where == "session" else {}
    on_request = {"proxy": proxy.url} if where == "request" else {}

    async def main() -> None:
        connector = aiohttp.TCPConnector(ssl=trusted)
        async with aiohttp.ClientSession(
            middlewares=(auth,), connector=connector, **on_session
        ) as session:
            for _ in range(2):
                async with session.get(api.url(), **on_request) as response:
                    assert response.status == 200
        # aiohttp's advice for a graceful shutdown: TLS transports (here inside proxy
        # tunnels) finish closing on the next turns of the loop.
        await asyncio.sleep(0.25)

    asyncio.run(main())
    _tunnelled(proxy, tls_server, api)
