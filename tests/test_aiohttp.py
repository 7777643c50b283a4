"""The auth object as an aiohttp client middleware, against real aiohttp.web servers on 127.0.0.1.

The API is an ``aiohttp.web`` application that accepts the tokens the fake
provider issued until the test revokes them; the token endpoint is the
project's FakeTokenServer, or a small ``aiohttp.web`` one where a test needs
answers that no provider gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import requests
from aiohttp import web

import chaveiro
from chaveiro import (
    ClientCredentialsAuth,
    ConfigurationError,
    CredentialsRejectedError,
    InvalidTokenResponseError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
)
from chaveiro._aiohttp import _UNKNOWN, _call_of
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.hostile import RawServer
from tests.test_hostile import HUGE

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` for every path on 127.0.0.1; yields the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await asyncio.sleep(0)  # the connections it closed finish closing while the loop runs


class Api:
    """A protected API: tokens the provider issued are good until :meth:`revoke_all`.

    ``/redirect?to=URL&status=302`` redirects without looking at the token;
    ``/always-refuse`` refuses every token; anything else answers 200 to a good
    token and ``refuse`` (401) to any other.
    """

    def __init__(self, provider: FakeTokenServer) -> None:
        self.provider = provider
        self.revoked: set[str] = set()
        self.refuse = 401
        self.padding = 0
        """Bytes of padding in each refusal's body."""
        self.seen: list[tuple[str, str | None, bytes]] = []
        """``(path, Authorization header, body)`` of every request."""
        self.url = ""

    def revoke_all(self) -> None:
        self.revoked.update(self.provider.issued_tokens)

    def authorizations(self, path: str) -> list[str | None]:
        return [header for seen, header, _ in self.seen if seen == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        header = request.headers.get("Authorization")
        self.seen.append((request.path, header, body))
        if request.path == "/redirect":
            status = int(request.query.get("status", "302"))
            return web.Response(status=status, headers={"Location": request.query["to"]})
        scheme, _, token = (header or "").partition(" ")
        good = (
            scheme == "Bearer"
            and token in self.provider.issued_tokens
            and token not in self.revoked
            and request.path != "/always-refuse"
        )
        if not good:
            refusal = {"error": "invalid_token", "padding": "x" * self.padding}
            return web.json_response(refusal, status=self.refuse)
        return web.json_response({"ok": True, "body_length": len(body)})


@pytest.fixture
async def api(server: FakeTokenServer) -> AsyncIterator[Api]:
    made = Api(server)
    async with serving(made.handle) as url:
        made.url = url
        yield made


@pytest.fixture
async def other(server: FakeTokenServer) -> AsyncIterator[Api]:
    """Another origin (another port), which would accept the token too if it ever got one."""
    made = Api(server)
    async with serving(made.handle) as url:
        made.url = url
        yield made


async def get(session: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    async with session.get(url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


# ---- reuse and single flight --------------------------------------------------------------------


async def test_many_requests_one_token(server: FakeTokenServer, api: Api, make_auth):
    """ClientSession(middlewares=(auth,)): 50 requests, one token request, every one authorized."""
    auth = make_auth()
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        codes = [await get(session, api.url + "/orders") for _ in range(50)]
    assert codes == [200] * 50
    assert server.token_requests == 1
    assert set(api.authorizations("/orders")) == {auth.get_token().authorization}


async def test_per_request_middleware(server: FakeTokenServer, api: Api, make_auth):
    """middlewares=(auth,) on one request: that request gets the token, the others do not."""
    auth = make_auth()
    async with aiohttp.ClientSession() as session:
        assert await get(session, api.url + "/with", middlewares=(auth,)) == 200
        assert await get(session, api.url + "/without") == 401
    assert api.authorizations("/without") == [None]
    assert server.token_requests == 1


async def test_500_tasks_at_cold_start_make_one_token_request(
    server: FakeTokenServer, api: Api, make_auth
):
    """500 concurrent tasks, no token yet, a slow endpoint: one token request, all 200.

    Each is counted once in ``auth.stats``: the one that fetched, and 499 reused
    (most of them after waiting for that fetch).
    """
    server.token_delay = 0.2
    auth = make_auth()
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        codes = await asyncio.gather(*(get(session, api.url) for _ in range(500)))
    assert codes == [200] * 500
    assert server.token_requests == 1
    assert (auth.stats.fetched, auth.stats.reused) == (1, 499)
    assert auth.stats.waited > 0


async def test_a_thread_with_requests_and_tasks_share_one_flight(
    server: FakeTokenServer, api: Api, make_auth
):
    """A thread (requests) and 20 tasks (aiohttp) at a cold start: one token request in all."""
    server.token_delay = 0.5
    auth = make_auth()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(requests.get(api.url, auth=auth, timeout=10).status_code)
    )
    thread.start()
    for _ in range(500):  # until the thread's token request is out (at most 5 s)
        if server.token_requests:
            break
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        codes += await asyncio.gather(*(get(session, api.url) for _ in range(20)))
    await asyncio.to_thread(thread.join)
    assert codes == [200] * 21
    assert server.token_requests == 1


async def test_a_cancelled_leader_does_not_wedge_the_others(
    server: FakeTokenServer, api: Api, make_auth
):
    """The task fetching the token is cancelled: the next call still gets a token."""
    server.token_delay = 0.5
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        leader = asyncio.create_task(get(session, api.url))
        for _ in range(500):
            if server.token_requests:
                break
            await asyncio.sleep(0.01)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert await get(session, api.url) == 200


# ---- 401: renew once, replay once ------------------------------------------------------------


async def test_401_renews_and_replays_the_body(server: FakeTokenServer, api: Api, make_auth):
    """A refused token is renewed and the POST replayed once, body and all."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        await get(session, api.url)
        api.revoke_all()
        async with session.post(api.url + "/orders", data=b"abc") as response:
            assert response.status == 200
            assert (await response.json())["body_length"] == 3
    first, second = api.authorizations("/orders")
    assert first != second
    assert [body for path, _, body in api.seen if path == "/orders"] == [b"abc", b"abc"]
    assert server.token_requests == 2


async def test_the_401_gives_its_connection_back_before_the_renewal(
    server: FakeTokenServer, api: Api, make_auth
):
    """With one connection in the pool, the token request can only go once the 401 is read."""
    connector = aiohttp.TCPConnector(limit=1)
    auth = make_auth(timeout=1.0, max_attempts=1)
    auth.get_token()  # not through the session: it has no idle connection to the endpoint
    api.revoke_all()
    api.padding = 4 << 20  # more than the client takes in before the body is read
    async with aiohttp.ClientSession(connector=connector, middlewares=(auth,)) as session:
        assert await get(session, api.url) == 200
    assert server.token_requests == 2


async def test_16_concurrent_401s_make_one_renewal(server: FakeTokenServer, api: Api, make_auth):
    """Every task's token is refused at once: one renewal, every request replayed once."""
    auth = make_auth()
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        await get(session, api.url)
        api.revoke_all()
        server.token_delay = 0.2
        codes = await asyncio.gather(*(get(session, api.url + "/x") for _ in range(16)))
    assert codes == [200] * 16
    assert server.token_requests == 2
    assert auth.stats.replayed == 16
    assert len(api.authorizations("/x")) == 32


async def test_a_seekable_file_body_is_replayed(server: FakeTokenServer, api: Api, make_auth):
    """A file-like body is rewound and sent again (aiohttp >= 3.12.1 tells whether it can be)."""
    replays = hasattr(aiohttp.payload.Payload, "consumed")
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        await get(session, api.url)
        api.revoke_all()
        async with session.post(api.url + "/file", data=io.BytesIO(b"abcdef")) as response:
            assert response.status == (200 if replays else 401)
    bodies = [body for path, _, body in api.seen if path == "/file"]
    assert bodies == ([b"abcdef"] * 2 if replays else [b"abcdef"])


async def test_a_consumed_stream_is_not_replayed(server: FakeTokenServer, api: Api, make_auth):
    """An async generator body was used up by the first send: the caller gets the 401."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        await get(session, api.url)
        api.revoke_all()
        async with session.post(api.url + "/stream", data=chunks()) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "invalid_token"
    assert [body for path, _, body in api.seen if path == "/stream"] == [b"abcd"]
    assert server.token_requests == 1


async def test_a_persistent_401_is_not_looped(server: FakeTokenServer, api: Api, make_auth):
    """The API refuses the new token too: two attempts, then the 401 goes back."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        assert await get(session, api.url + "/always-refuse") == 401
    assert len(api.authorizations("/always-refuse")) == 2
    assert server.token_requests == 2


async def test_replay_can_be_switched_off(server: FakeTokenServer, api: Api, make_auth):
    """replay_on_401=False: the 401 goes back as it came, nothing renewed or resent."""
    async with aiohttp.ClientSession(middlewares=(make_auth(replay_on_401=False),)) as session:
        await get(session, api.url)
        api.revoke_all()
        assert await get(session, api.url + "/once") == 401
    assert len(api.authorizations("/once")) == 1
    assert server.token_requests == 1


async def test_403_renews_only_when_asked(server: FakeTokenServer, api: Api, make_auth):
    """An API that answers 403 to a dead token: renewed with renew_on=(401, 403) only."""
    api.refuse = 403
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        await get(session, api.url)
        api.revoke_all()
        assert await get(session, api.url + "/default") == 403
    assert server.token_requests == 1
    async with aiohttp.ClientSession(middlewares=(make_auth(renew_on=(401, 403)),)) as session:
        assert await get(session, api.url + "/asked") == 200
    assert server.token_requests == 2
    assert len(api.authorizations("/asked")) == 2


# ---- where the token goes --------------------------------------------------------------------


async def test_only_hosts(server: FakeTokenServer, api: Api, make_auth):
    """only_hosts=: no token, and no token request, for a host not listed."""
    async with aiohttp.ClientSession(middlewares=(make_auth(only_hosts=["api.example"]),)) as s:
        assert await get(s, api.url + "/elsewhere") == 401
    assert api.authorizations("/elsewhere") == [None]
    assert server.token_requests == 0
    async with aiohttp.ClientSession(middlewares=(make_auth(only_hosts=["127.0.0.1"]),)) as s:
        assert await get(s, api.url + "/listed") == 200


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_carries_no_token(
    server: FakeTokenServer, api: Api, other: Api, make_auth, status: int
):
    """aiohttp runs the middleware again for each hop: a hop to another origin gets nothing."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        target = f"{other.url}/landing"
        code = await get(session, api.url + "/redirect", params={"to": target, "status": status})
    assert code == 401  # the other origin saw no token
    assert other.authorizations("/landing") == [None]
    assert api.authorizations("/redirect")[0] is not None


async def test_a_redirect_within_the_origin_keeps_the_token(api: Api, make_auth):
    """A redirect to the same origin is followed with the token."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        to = f"{api.url}/landing"
        assert await get(session, api.url + "/redirect", params={"to": to}) == 200
    assert api.authorizations("/landing")[0] is not None


async def test_back_to_the_first_origin_the_token_comes_back(api: Api, other: Api, make_auth):
    """A -> B -> A: B gets nothing, the last hop (the user's origin again) gets the token."""
    back = f"{other.url}/redirect?to={api.url}/back"
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        assert await get(session, api.url + "/redirect", params={"to": back}) == 200
    assert other.authorizations("/redirect") == [None]
    assert api.authorizations("/back")[0] is not None


async def test_a_new_call_after_a_redirect_is_its_own_origin(api: Api, other: Api, make_auth):
    """In the same task, a call made to B after a call redirected from A to B gets the token."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        to = f"{other.url}/landing"
        assert await get(session, api.url + "/redirect", params={"to": to}) == 401
        assert await get(session, other.url + "/direct") == 200
        assert await get(session, api.url + "/redirect", params={"to": to}) == 401
    assert other.authorizations("/landing") == [None, None]
    assert other.authorizations("/direct")[0] is not None


async def test_a_redirect_answer_not_followed_ends_the_call(api: Api, other: Api, make_auth):
    """allow_redirects=False: the 3xx goes to the caller; the next call starts afresh."""
    async with aiohttp.ClientSession(middlewares=(make_auth(),)) as session:
        to = f"{other.url}/landing"
        url = f"{api.url}/redirect?to={to}"
        assert await get(session, url, allow_redirects=False) == 302
        assert await get(session, to) == 200
    assert other.authorizations("/landing")[0] is not None


def test_hops_of_one_call_are_linked_by_its_timer():
    """What links the hops of a call; a request that does not tell is any redirect's next hop."""
    assert _call_of(object()) is _UNKNOWN  # type: ignore[arg-type]


# ---- the token request -------------------------------------------------------------------------


async def test_the_token_request_goes_through_the_session(
    server: FakeTokenServer, api: Api, make_auth
):
    """Trace configs see the token request; other middlewares and ours do not run for it."""
    traced: list[str] = []
    middlewared: list[str] = []

    async def on_start(session: object, context: object, params: aiohttp.TraceRequestStartParams):
        traced.append(str(params.url))

    async def watching(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType):
        middlewared.append(str(request.url))
        return await handler(request)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    auth = make_auth()
    async with aiohttp.ClientSession(middlewares=(watching, auth), trace_configs=[trace]) as s:
        assert await get(s, api.url + "/traced") == 200
    assert traced == [api.url + "/traced", server.oauth_token_url]
    assert middlewared == [api.url + "/traced"]


async def test_a_raise_for_status_session_still_gets_typed_errors(api: Api, make_auth):
    """ClientSession(raise_for_status=True) cannot turn the token endpoint's answer into its own."""
    auth = make_auth(client_secret="wrong")
    async with aiohttp.ClientSession(middlewares=(auth,), raise_for_status=True) as session:
        with pytest.raises(CredentialsRejectedError) as caught:
            await get(session, api.url)
    assert caught.value.error == "invalid_client"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # auth= is deprecated in 3.14
async def test_a_session_with_basic_auth_is_a_configuration_error(api: Api, make_auth):
    """aiohttp refuses auth= beside our Authorization header: said clearly, not a ValueError."""
    basic = aiohttp.BasicAuth("user", "password")
    async with aiohttp.ClientSession(middlewares=(make_auth(),), auth=basic) as session:
        with pytest.raises(ConfigurationError, match="Remove auth="):
            await get(session, api.url)


async def test_unreachable_token_endpoint_is_typed(api: Api):
    auth = ClientCredentialsAuth("http://127.0.0.1:9/token", CLIENT_ID, CLIENT_SECRET)
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        with pytest.raises(TokenEndpointUnreachableError, match="no answer"):
            await get(session, api.url)


@pytest.mark.parametrize(
    ("options", "session_timeout"),
    [
        pytest.param({"timeout": 0.3}, None, id="timeout="),
        pytest.param({"deadline": 0.4}, None, id="deadline="),
        pytest.param({}, aiohttp.ClientTimeout(sock_read=0.3), id="the session's"),
    ],
)
async def test_a_hung_token_endpoint_times_out(
    server: FakeTokenServer, api: Api, make_auth, options, session_timeout
):
    """Our timeouts, the deadline and the session's own timeouts all bound the token request."""
    server.token_delay = 3.0
    auth = make_auth(max_attempts=1, **options)
    kwargs = {} if session_timeout is None else {"timeout": session_timeout}
    async with aiohttp.ClientSession(middlewares=(auth,), **kwargs) as session:
        with pytest.raises(TokenEndpointUnreachableError, match="did not answer in time"):
            await get(session, api.url)
    assert server.token_requests == 1


@pytest.mark.parametrize("answer", HUGE)
async def test_the_token_response_is_read_up_to_one_mib(api: Api, answer):
    """A token response over 1 MiB (plain, chunked or gzip) is refused, not loaded."""
    with RawServer() as raw:
        raw.answer = answer
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            with pytest.raises(InvalidTokenResponseError, match="more than 1048576 bytes"):
                await get(session, api.url)


class Landing:
    """Records every request that reaches it."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.path, await request.read()))
        return web.json_response({"access_token": "stolen", "token_type": "Bearer"})


@pytest.mark.parametrize("where", ["same origin", "other origin"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirecting_token_endpoint_is_an_error(api: Api, status: int, where: str):
    """The token endpoint redirects: an error naming the Location; the target receives nothing."""
    landing = Landing()
    async with serving(landing.handle) as elsewhere:
        target = {"other origin": elsewhere + "/token"}.get(where, "/landing")

        async def token_endpoint(request: web.Request) -> web.StreamResponse:
            if request.path == "/token":
                return web.Response(status=status, headers={"Location": target})
            return await landing.handle(request)

        async with serving(token_endpoint) as idp:
            auth = ClientCredentialsAuth(idp + "/token", CLIENT_ID, CLIENT_SECRET, max_attempts=1)
            async with aiohttp.ClientSession(middlewares=(auth,)) as session:
                with pytest.raises(TokenEndpointError, match=f"HTTP {status}") as caught:
                    await get(session, api.url)
    assert target in str(caught.value)
    assert landing.hits == []
    assert api.seen == []


# ---- TLS with a private CA ---------------------------------------------------------------------


async def test_private_ca_through_the_sessions_connector(tls_server: FakeTokenServer, ca):
    """The session's connector trusts the private CA: the token request uses it too."""
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    auth = ClientCredentialsAuth(tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    # force_close: each TLS connection is shut down while the loop runs (aiohttp 3.12.0
    # leaves pooled ones half-closed when the session closes and the loop stops at once)
    connector = aiohttp.TCPConnector(ssl=trusting, force_close=True)
    async with aiohttp.ClientSession(connector=connector, middlewares=(auth,)) as session:
        assert await get(session, tls_server.api_url()) == 200
    assert tls_server.token_requests == 1


async def test_an_untrusted_certificate_is_a_clear_error(tls_server: FakeTokenServer):
    """Verification stays on: an unknown CA is a TLS error that says what to do, not retried."""
    auth = ClientCredentialsAuth(tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        with pytest.raises(TokenEndpointUnreachableError) as caught:
            await get(session, tls_server.api_url())
    assert "TLS verification failed" in str(caught.value)
    assert "TCPConnector(ssl=" in str(caught.value)
    assert not caught.value.retryable
    assert tls_server.token_requests == 0  # no handshake, no request


async def test_client_certificate_through_the_sessions_connector(tmp_path):
    """mTLS (tls_client_auth): the connector presents auth.tls; the token is bound to it."""
    with FakeTokenServer(mtls=True) as mtls:
        mtls.add_client("pix", tls_client_auth_san_dns="pix.example")
        cert = mtls.issue_client_cert("pix.example", common_name="Empresa Pix")
        (tmp_path / "c.p12").write_bytes(cert.to_pkcs12("senha-9876"))
        tls = chaveiro.client_tls(tmp_path / "c.p12", "senha-9876", verify=mtls.ca_file)
        auth = ClientCredentialsAuth(
            mtls.oauth_token_url, "pix", auth_method="tls_client_auth", client_cert=tls
        )
        assert auth.tls is not None
        connector = aiohttp.TCPConnector(ssl=auth.tls.ssl_context, force_close=True)
        async with aiohttp.ClientSession(connector=connector, middlewares=(auth,)) as session:
            assert await get(session, mtls.api_url()) == 200
            assert await get(session, mtls.api_url()) == 200
        # aiohttp's advice for a graceful shutdown: TLS transports finish closing on the
        # next turns of the loop (on a busy machine, later than the session's close).
        await asyncio.sleep(0.25)
        assert mtls.token_requests == 1
        assert mtls.token_request_log[0].client_cert_thumbprint == cert.thumbprint
        tls.close()


# ---- the optional extra ------------------------------------------------------------------------


def test_import_chaveiro_does_not_import_aiohttp():
    """aiohttp loads when a token request is sent through it, not at import or construction."""
    code = (
        "import sys, chaveiro;"
        "chaveiro.ClientCredentialsAuth('https://idp.example/token', 'id', 'secret');"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
