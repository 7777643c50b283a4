"""A tiny HTTP server on 127.0.0.1 that records every request and answers from a script."""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Everything received, as one string (for secret scans)."""
        head = " ".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path} {head} {self.body.decode('latin-1')}"


Answer = tuple[int, dict[str, str], bytes]
Script = Callable[[Seen], Answer]


def token_answer(token: str = "landing-token-0123456789abcdef") -> Answer:
    body = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
    return 200, {"Content-Type": "application/json"}, body.encode()


class Serving:
    """A socketserver served by a daemon thread for the ``with`` block, then shut down."""

    def __init__(self, server: socketserver.BaseServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Recorder(Serving):
    """``with Recorder(script) as rec:`` — ``rec.url(path)``, ``rec.seen`` (every request)."""

    def __init__(
        self, script: Script | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.script: Script = script or (lambda seen: token_answer())
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with recorder._lock:
                    recorder.seen.append(seen)
                status, headers, payload = recorder.script(seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if ssl_context is not None:  # HTTPS, with the certificate ``ssl_context`` holds
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        super().__init__(self._server)

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}{path}"
