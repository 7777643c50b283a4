"""The ``mcp`` SDK's Streamable HTTP client with client credentials (docs/mcp.md).

A real MCP server (the SDK's own ``MCPServer``, served by uvicorn on 127.0.0.1)
accepts only tokens that the fake token server issued for it (RFC 8707
``resource``) and has not revoked: its token verifier asks the fake server's
protected API about each bearer token. The client is the SDK's ``Client`` over
``streamable_http_client``, with an ``httpx2.AsyncClient(auth=auth)``, exactly as
the recipe shows.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

pytest.importorskip("mcp")
httpx2 = pytest.importorskip("httpx2")
uvicorn = pytest.importorskip("uvicorn")

from mcp import Client  # noqa: E402 - after the skip where mcp is not installed
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.server.auth.provider import AccessToken  # noqa: E402
from mcp.server.auth.settings import AuthSettings  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402

_STARTUP_POLLS = 1000  # x 10 ms: uvicorn answers within a fraction of that


class _AskTheTokenServer:
    """A token verifier that asks the fake token server's protected API about each token.

    The API vouches for the token (issued, not revoked, not expired); its audience,
    the ``resource`` it was asked for, must then be this MCP server.
    """

    def __init__(self, server: FakeTokenServer, resource: str) -> None:
        self.check_url = server.api_url("/api/whoami")
        self.resource = resource
        self.tls = ssl.create_default_context()  # made once: a client per check stays cheap

    async def verify_token(self, token: str) -> AccessToken | None:
        async with httpx2.AsyncClient(verify=self.tls) as client:
            answer = await client.get(self.check_url, headers={"Authorization": f"Bearer {token}"})
        if answer.status_code != 200:
            return None
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        if claims["aud"] != self.resource:
            return None
        client_id = answer.json()["client_id"]
        return AccessToken(token=token, client_id=client_id, scopes=[], resource=self.resource)


class McpServer:
    """An MCP server on 127.0.0.1 whose ``/mcp`` endpoint wants a token from ``server``."""

    def __init__(self, server: FakeTokenServer) -> None:
        self.socket = socket.socket()  # bound here, handed to uvicorn: no port to race for
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/mcp"
        self.calls: list[int] = []
        root = logging.getLogger()
        level, handlers = root.level, root.handlers[:]
        app = MCPServer(
            "orders",
            token_verifier=_AskTheTokenServer(server, self.url),
            auth=AuthSettings(
                issuer_url=server.issuer,
                resource_server_url=self.url,
                validate_token_resource=False,  # the verifier checks it (mcp < 2.2 cannot)
            ),
        )
        root.setLevel(level)  # MCPServer() configures the root logger: undo it
        root.handlers[:] = handlers

        @app.tool()
        def add(a: int, b: int) -> int:
            """a + b, remembering that it ran."""
            self.calls.append(a)
            return a + b

        config = uvicorn.Config(app.streamable_http_app(), log_level="warning", lifespan="on")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> McpServer:
        self._thread.start()
        for _ in range(_STARTUP_POLLS):
            if self._uvicorn.started or not self._thread.is_alive():
                break
            time.sleep(0.01)
        if not self._uvicorn.started:
            self.__exit__()
            pytest.fail("the MCP server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(10)
        self.socket.close()
        assert not self._thread.is_alive(), "the MCP server did not stop"


@pytest.fixture
def mcp_server(server: FakeTokenServer) -> Iterator[McpServer]:
    with McpServer(server) as running:
        yield running


@pytest.fixture
def auth(server: FakeTokenServer, mcp_server: McpServer) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, resource=mcp_server.url
    )


Sent = tuple[str, str]
"""The method and the ``Authorization`` header of a request sent to the MCP server."""

MODES = pytest.mark.parametrize(
    ("anyio_backend", "mode"),
    [
        ("asyncio", "auto"),  # server/discover, then stateless requests
        ("trio", "auto"),
        # The initialize handshake: a session id, an event stream, DELETE at the end. Not on
        # trio: there the SDK's event-stream readers are left for the garbage collector to
        # close, a ResourceWarning with a fixed header as well.
        ("asyncio", "legacy"),
    ],
)


@asynccontextmanager
async def connected(
    url: str, auth: Any, *, sent: list[Sent] | None = None, mode: str = "auto"
) -> AsyncIterator[Client]:
    """The recipe: the SDK's client over an ``httpx2.AsyncClient`` that has the auth object.

    Every request to ``url`` goes into ``sent`` as it leaves, its token attached.
    """

    async def record(request: Any) -> None:
        if sent is not None and str(request.url) == url:
            sent.append((request.method, request.headers.get("Authorization", "")))

    async with (
        httpx2.AsyncClient(auth=auth, event_hooks={"request": [record]}) as http_client,
        Client(streamable_http_client(url, http_client=http_client), mode=mode) as client,
    ):
        yield client


async def _add(client: Client, a: int, b: int) -> Any:
    result = await client.call_tool("add", {"a": a, "b": b})
    assert not result.is_error, result
    return result.structured_content


@pytest.mark.anyio
@MODES
async def test_many_tool_calls_take_one_token_request(
    server: FakeTokenServer, mcp_server: McpServer, auth: ClientCredentialsAuth, mode: str
):
    sent: list[Sent] = []
    async with connected(mcp_server.url, auth, sent=sent, mode=mode) as client:
        results = [await _add(client, n, 1) for n in range(10)]
        tools = await client.list_tools()
    assert results == [{"result": n + 1} for n in range(10)]
    assert [tool.name for tool in tools.tools] == ["add"]
    assert mcp_server.calls == list(range(10))
    assert server.token_requests == 1
    assert server.api_unauthorized == 0  # the server's verifier never refused a token
    (token,) = server.issued_tokens
    assert {authorization for _, authorization in sent} == {f"Bearer {token}"}
    if mode == "legacy":  # the event stream and the end of the session carried it too
        assert {"GET", "DELETE"} <= {method for method, _ in sent}


@pytest.mark.anyio
@MODES
async def test_a_revoked_token_is_renewed_mid_session_and_the_call_replayed(
    server: FakeTokenServer, mcp_server: McpServer, auth: ClientCredentialsAuth, mode: str
):
    sent: list[Sent] = []
    async with connected(mcp_server.url, auth, sent=sent, mode=mode) as client:
        assert await _add(client, 1, 1) == {"result": 2}
        server.revoke_all()
        before = len(sent)
        assert await _add(client, 41, 1) == {"result": 42}  # in the same session
        assert await _add(client, 2, 1) == {"result": 3}
    assert server.token_requests == 2
    assert server.api_unauthorized == 1  # the revoked token, refused once, then replaced
    assert mcp_server.calls == [1, 41, 2]  # the refused call ran once: its replay
    first, second = server.issued_tokens
    refused, replayed = sent[before : before + 2]
    assert refused == ("POST", f"Bearer {first}")
    assert replayed == ("POST", f"Bearer {second}")
    assert {authorization for _, authorization in sent[before + 2 :]} == {f"Bearer {second}"}


@pytest.mark.anyio
async def test_the_event_loop_keeps_running_while_the_token_is_fetched(
    server: FakeTokenServer, mcp_server: McpServer, auth: ClientCredentialsAuth
):
    server.token_delay = 0.3
    ticks_during_fetch = 0
    stop = anyio.Event()

    async def heartbeat() -> None:
        nonlocal ticks_during_fetch
        while not stop.is_set():
            # Between the token request's arrival and its answer: the fetch is under way.
            if server.token_requests == 1 and not server.issued_tokens:
                ticks_during_fetch += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(heartbeat)
        async with connected(mcp_server.url, auth) as client:
            assert await _add(client, 2, 2) == {"result": 4}
        stop.set()
    assert server.token_requests == 1
    assert ticks_during_fetch > 0  # a blocked loop could not have seen the fetch under way


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the server's answer: one loop will do
@pytest.mark.parametrize("resource", [None, "https://another.example/mcp"])
async def test_the_server_refuses_a_token_for_another_resource(
    server: FakeTokenServer, mcp_server: McpServer, resource: str | None
):
    other = ClientCredentialsAuth(
        server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, resource=resource
    )
    async with httpx2.AsyncClient(auth=other) as client:
        answer = await client.post(mcp_server.url, json={})
    assert answer.status_code == 401  # after one renewal: the new token is no better
    assert server.token_requests == 2
    assert server.api_unauthorized == 0  # the tokens were valid, just not for this server


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_server_refuses_a_token_it_did_not_issue(mcp_server: McpServer):
    forged = httpx2.AsyncClient(headers={"Authorization": "Bearer forged-0123456789abcdef"})
    async with forged:
        answer = await forged.post(mcp_server.url, json={})
    assert answer.status_code == 401
    assert mcp_server.calls == []
