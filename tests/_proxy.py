"""A real forward proxy on 127.0.0.1: ``CONNECT`` tunnels for HTTPS, absolute URLs for HTTP.

It records what it was asked to do (``proxy.seen``: ``"CONNECT 127.0.0.1:8443"``,
``"POST http://127.0.0.1:8080/token"``), so a test can tell which requests went
through it and where to, and it never reads inside a tunnel.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from urllib.parse import urlsplit

from tests._recorder import Serving


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(65537)
            if not line.strip():
                return
            method, target, _version = line.decode("latin-1").split()
            headers: list[bytes] = []
            length = 0
            while (header := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                headers.append(header)
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.server.record(f"{method} {target}")
            if method == "CONNECT":
                self._tunnel(target)
                return
            body = self.rfile.read(length) if length else b""
            if not self._forward(method, target, headers, body):
                return

    def _tunnel(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        client = self.connection
        with upstream:
            _pump(client, upstream)

    def _forward(self, method: str, target: str, headers: list[bytes], body: bytes) -> bool:
        """Send one request on to its origin and its answer back; False to close."""
        url = urlsplit(target)
        if url.scheme != "http" or url.hostname is None:
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        path = url.path + (f"?{url.query}" if url.query else "")
        kept = [h for h in headers if not h.lower().startswith((b"proxy-", b"connection"))]
        head = f"{method} {path or '/'} HTTP/1.1\r\n".encode() + b"".join(kept)
        head += b"Connection: close\r\n\r\n"
        with socket.create_connection((url.hostname, url.port or 80), timeout=5) as upstream:
            upstream.sendall(head + body)
            answer = upstream.makefile("rb").read()
        self.wfile.write(answer)  # the origin closed: so does this connection
        return False


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [a, b]
    while True:
        ready, _, _ = select.select(sockets, [], [], 5)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            other = b if sock is a else a
            try:
                other.sendall(data)
            except OSError:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def record(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)


class Proxy(Serving):
    """``with Proxy() as proxy:`` — ``proxy.url``, ``proxy.seen``."""

    _server: _Server

    def __init__(self) -> None:
        super().__init__(_Server())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def seen(self) -> list[str]:
        with self._server._lock:
            return list(self._server.seen)
