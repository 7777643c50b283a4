"""Provider tests: one way to call the API per HTTP client, a fake clock, a static issuer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import anyio
import httpx
import pytest
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro._discovery import discovered
from chaveiro._manager import wait_for_renewals
from chaveiro.testing import RecordedRequest

CLIENTS = ("requests", "httpx", "httpx-asyncio", "httpx-trio", "aiohttp")


@pytest.fixture(autouse=True)
def _forget_discovered_issuers() -> Iterator[None]:
    """Ports are reused between tests: no test may see another's discovery document."""
    discovered.clear()
    yield
    discovered.clear()


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Each test that takes ``client`` runs with requests, httpx, httpx async on both loops, and
    aiohttp (the auth object as a client middleware)."""
    return str(request.param)


async def _acall(auth: ClientCredentialsAuth, url: str, times: int) -> list[int]:
    async with httpx.AsyncClient(auth=auth) as http:
        return [(await http.get(url)).status_code for _ in range(times)]


async def _aiohttp_call(auth: ClientCredentialsAuth, url: str, times: int) -> list[int]:
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        codes = []
        for _ in range(times):
            async with session.get(url) as response:
                codes.append(response.status)
        return codes


def call(client: str, auth: ClientCredentialsAuth, url: str, times: int = 1) -> list[int]:
    """GET ``url`` ``times`` times with ``auth`` through ``client``; the status codes."""
    if client == "requests":
        with requests.Session() as session:
            session.auth = auth
            codes = [session.get(url, timeout=10).status_code for _ in range(times)]
        wait_for_renewals()  # requests renews a still-valid token in the background
        return codes
    if client == "aiohttp":
        return asyncio.run(_aiohttp_call(auth, url, times))
    if client == "httpx":
        with httpx.Client(auth=auth) as http:
            return [http.get(url).status_code for _ in range(times)]
    backend = client.removeprefix("httpx-")
    return anyio.run(_acall, auth, url, times, backend=backend)


def fields_of(request: RecordedRequest) -> dict[str, object]:
    """The JSON body of a recorded request, values untouched."""
    body = json.loads(request.body)
    assert isinstance(body, dict)
    return body


class StaticIssuer:
    """A real HTTP server on 127.0.0.1 answering every GET with what the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.body = b"{}"
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,))

    def document(self, **metadata: object) -> None:
        """Serve this discovery document (``issuer`` defaults to this server's URL)."""
        self.body = json.dumps({"issuer": self.url, **metadata}).encode()
        self.status, self.content_type = 200, "application/json"

    def __enter__(self) -> StaticIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def static_issuer() -> Iterator[StaticIssuer]:
    with StaticIssuer() as issuer:
        yield issuer
