"""The fake server's HTTP/1.1 plumbing: a threaded server on 127.0.0.1, optionally over TLS.

Connections are tracked so ``stop()`` can cut them; the TLS handshake happens in the
connection's own thread, and the client certificate it presented (mTLS) travels
with each request as DER.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol

from chaveiro.testing._wire import RecordedRequest, Response, json_response

__all__ = ["HTTPServer"]

_log = logging.getLogger("chaveiro.testing")
_MAX_BODY = 1024 * 1024
_MAX_DRAIN = 16 * _MAX_BODY  # read (and drop) this much of a too-large body before answering 413


def _drain(conn: socket.socket) -> None:
    """Read what the client already sent, so closing sends FIN, not a reset.

    A reset could destroy the TLS alert (``certificate required``...) before the
    client reads it; the client would then see a bare EOF instead of the reason.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(conn, socket.SHUT_WR)
        socket.socket.settimeout(conn, 0.5)
        for _ in range(16):  # at most 64 KiB, at most a few seconds
            if not socket.socket.recv(conn, 4096):
                break


class _App(Protocol):
    def _dispatch(self, req: RecordedRequest) -> Response: ...

    def _handshake_failed(self) -> None: ...


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = json_response(status, {"error": message})


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of hundreds of connections must not be dropped

    def __init__(self, app: _App, ssl_context: ssl.SSLContext | None) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        if ssl_context is not None:  # handshake later, in the connection's own thread
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is not news
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60.0
    wbufsize = 1 << 16  # headers and body leave in one send, flushed per request
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive connections
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except OSError:
                self.server.app._handshake_failed()
                _drain(self.connection)
                raise

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` now, not when the buffered answer is flushed."""
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep stderr quiet."""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(exc.response)
            return
        path, _, query = self.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert(binary_form=True)
        req = RecordedRequest(self.command, path, headers, body, query, client_cert=cert)
        try:
            resp = self.server.app._dispatch(req)
        except Exception:  # noqa: BLE001 - a bug here must answer 500, not hang the client
            _log.exception("FakeTokenServer failed on %s %s", self.command, path)
            resp = json_response(500, {"error": "fake server bug"})
        self._send(resp)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise _BodyError(501, "only chunked transfer encoding is supported")
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            raise _BodyError(400, "bad Content-Length")
        size = int(length)
        if size > _MAX_BODY:
            if size <= _MAX_DRAIN:
                self._read_exactly(size)  # so the client gets to read the 413, not a reset
            raise _BodyError(413, "body larger than 1 MiB")
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("client closed the connection mid-body")
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
                raise _BodyError(400, "bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > _MAX_DRAIN:
                raise _BodyError(413, "body larger than 1 MiB")
            chunk = self._read_exactly(size)
            chunks.append(chunk if total <= _MAX_BODY else b"")
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BodyError(400, "bad chunk terminator")
        for _ in range(100):  # trailer fields, up to the blank line
            if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                break
        if total > _MAX_BODY:
            raise _BodyError(413, "body larger than 1 MiB")
        return b"".join(chunks)

    def _send(self, resp: Response) -> None:
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)
