"""gunicorn ``--preload``: a module-level session used in the master, then forked.

The README's fork section says: an API call made in the master through a module-level
``requests.Session`` leaves its pooled connection to every worker, so the workers share
one socket (plain requests does the same); the fix is to close the session before the
workers fork, or in each worker as it starts (gunicorn's ``post_fork`` hook). These tests
fork real children against a real keep-alive server that records which connection (the
client's port) carried each request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


class PortRecorder:
    """An HTTP/1.1 keep-alive API on 127.0.0.1 that records the client port of each request."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.authorized: list[bool] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.ports.append(self.client_address[1])
                owner.authorized.append(self.headers.get("Authorization", "").startswith("Bearer "))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/orders"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,))
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def api() -> Iterator[PortRecorder]:
    recorder = PortRecorder()
    yield recorder
    recorder.close()


def _workers(
    session: requests.Session, url: str, post_fork: Callable[[], None], count: int = 2
) -> list[int]:
    """Fork ``count`` workers, one after the other; each runs ``post_fork``, then one call."""
    exits = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                post_fork()
                code = 0 if session.get(url, timeout=10).text == "ok" else 1
            finally:
                os._exit(code)
        exits.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    return exits


def _master_session(server: FakeTokenServer, api: PortRecorder) -> requests.Session:
    """What an app module does at import under --preload: a session, and one API call."""
    session = requests.Session()
    session.auth = ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    assert session.get(api.url, timeout=10).text == "ok"  # a warm-up call, in the master
    return session


def test_workers_share_the_masters_pooled_socket(server: FakeTokenServer, api: PortRecorder):
    """The trap: both workers send on the master's connection (one client port for all)."""
    session = _master_session(server, api)
    assert _workers(session, api.url, post_fork=lambda: None) == [0, 0]
    assert len(api.ports) == 3
    assert len(set(api.ports)) == 1  # the master's socket, written to by every worker
    session.close()


def test_closing_the_session_in_the_master_before_forking(
    server: FakeTokenServer, api: PortRecorder
):
    """Fix 1: session.close() in the master after its call; each worker opens its own."""
    session = _master_session(server, api)
    session.close()
    assert _workers(session, api.url, post_fork=lambda: None) == [0, 0]
    assert len(set(api.ports)) == 3
    assert all(api.authorized)
    assert server.token_requests == 1  # the token the master fetched serves the workers


def test_closing_the_session_in_each_worker_as_it_starts(
    server: FakeTokenServer, api: PortRecorder
):
    """Fix 2, gunicorn's post_fork hook: session.close() in the worker, before its first call."""
    session = _master_session(server, api)
    assert _workers(session, api.url, post_fork=session.close) == [0, 0]
    assert len(set(api.ports)) == 3
    assert all(api.authorized)
    assert session.get(api.url, timeout=10).text == "ok"  # the master's connection still works
    assert api.ports[-1] == api.ports[0]
    session.close()
