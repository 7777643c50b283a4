"""Hypothesis strategies for hostile token-endpoint answers, and a server that sends them.

Shared by the fuzz tests and ``benchmarks/outage.py``. A *case* is
``(status, headers, body, planted)``: ``planted`` lists the token-looking values
and secrets put somewhere in the answer, which must never come out in an error
message or a log record.
"""

from __future__ import annotations

import gzip
import json
import logging
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hypothesis import strategies as st

from chaveiro._dialect import MAX_BODY_BYTES

TOKEN_URL = "https://idp.example.com/oauth2/token"
NOW = 1_700_000_000.0
FIELDS = (
    "access_token",
    "token_type",
    "expires_in",
    "expires_at",
    "refresh_token",
    "refresh_expires_in",
    "scope",
    "error",
    "error_description",
    "error_uri",
    "message",
)
_B64URL = string.ascii_letters + string.digits + "-_"

tokenish = st.one_of(
    st.text(alphabet=_B64URL, min_size=32, max_size=90),
    st.builds(  # short opaque tokens: 20+ characters, letters and digits
        lambda a, d, rest: a + d + rest,
        st.sampled_from(string.ascii_letters),
        st.sampled_from(string.digits),
        st.text(alphabet=_B64URL, min_size=18, max_size=29),
    ),
    st.builds(
        lambda a, b, c: f"eyJ{a}.{b}.{c}",
        st.text(alphabet=_B64URL, min_size=30, max_size=40),
        st.text(alphabet=_B64URL, min_size=1, max_size=60),
        st.text(alphabet=_B64URL, min_size=0, max_size=40),
    ),
)
"""Values that look like access or refresh tokens (and must be redacted wherever shown)."""

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "Bearer", "bearer", "MAC", "3600", "-1", "1e999", "NaN", "\x00"]),
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[dict[str, object], list[str]]:
    """A JSON object with any subset of the token fields, each of any type."""
    planted: list[str] = []
    payload: dict[str, object] = {}
    for name in FIELDS:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            continue
        if choice == 1:
            value = draw(tokenish)
            planted.append(value)
            payload[name] = value
        else:
            payload[name] = draw(json_values)
    if draw(st.booleans()):
        key = draw(tokenish)  # a token as a field *name*
        planted.append(key)
        payload[key] = draw(json_values)
    if draw(st.booleans()):
        payload.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return payload, planted


_hostile_values = st.one_of(
    json_values,
    tokenish,
    st.integers(min_value=10**300, max_value=10**400),
    st.sampled_from([float("inf"), float("nan"), -1, 0, 10**20, "a b", "a\r\nX: y", "é", ""]),
)


@st.composite
def near_valid_payloads(draw: st.DrawFn) -> tuple[dict[str, object], list[str]]:
    """A good token response with one to three fields made hostile: the likeliest bugs."""
    access = draw(tokenish)
    payload: dict[str, object] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": draw(tokenish),
        "refresh_expires_in": 7200,
        "scope": "api.read",
    }
    planted = [access, str(payload["refresh_token"])]
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        value = draw(_hostile_values)
        if isinstance(value, str) and len(value) >= 32 and name != "scope":
            planted.append(value)
        payload[name] = value
    if payload.get("scope") in planted:
        planted.remove(str(payload["scope"]))  # a granted scope is not a secret
    return payload, planted


def _html(text: str) -> bytes:
    return (
        f"<html><head><title>Error {text}</title></head><body><p>{text}</p></body></html>".encode()
    )


_HUGE = [
    b'{"access_token": "' + b"a" * MAX_BODY_BYTES + b'"}',
    b" " * (MAX_BODY_BYTES + 1),
    b"[" * 200_000,
]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, list[str]]:
    """``(body, content_type, planted)``."""
    kinds = ["json", "json", "near", "near", "form", "html", "bytes", "huge", "text"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("json", "near"):
        payload, planted = draw(payloads() if kind == "json" else near_valid_payloads())
        text = json.dumps(payload, allow_nan=True, default=str)
        return text.encode(), draw(st.sampled_from(["application/json", "", "text/plain"])), planted
    if kind == "form":
        payload, planted = draw(payloads())
        pairs = "&".join(f"{k}={v}" for k, v in payload.items())
        return pairs.encode("utf-8", "surrogatepass"), "application/x-www-form-urlencoded", planted
    if kind == "html":
        value = draw(tokenish)
        return _html(value), "text/html; charset=utf-8", [value]
    if kind == "bytes":
        raw = draw(st.binary(max_size=300))
        return draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b""])) + raw, "application/json", []
    if kind == "huge":
        return draw(st.sampled_from(_HUGE)), "application/json", []
    value = draw(tokenish)
    prefix = draw(st.text(st.characters(exclude_characters=_B64URL + ".~+/="), max_size=50))
    return f"{prefix} {value} ".encode("utf-8", "surrogatepass"), "text/plain", [value]


retry_afters = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**6), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(-NOW, 2e11).map(lambda t: formatdate(NOW + t, usegmt=True)),
    st.sampled_from(
        [
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Fri, 31 Dec 9999 23:59:59 -2359",
            "Sat, 01 Jan 0001 00:00:00 +2359",
            "Sun, 06 Nov 1994 08:49:37",
            "1e400",
            "nan",
            "-inf",
        ]
    ),
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 301, 302, 307, 400, 401, 403, 404, 429, 500, 502, 503]),
    st.integers(0, 999),
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[int, dict[str, str], bytes, list[str]]:
    """A whole hostile answer: ``(status, headers, body, planted)``."""
    body, content_type, planted = draw(bodies())
    headers = draw(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=3))
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["Retry-After", "retry-after"]))] = draw(retry_afters)
    if draw(st.booleans()):
        location = draw(tokenish)
        planted.append(location)
        headers["Location"] = f"https://elsewhere.example/{location}"
    return draw(statuses), headers, body, planted


class LogCapture(logging.Handler):
    """Every formatted record of the ``chaveiro`` logger, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[LogCapture]:
    logger = logging.getLogger("chaveiro")
    handler = LogCapture()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


FRAGMENT = 20
"""Any this-many characters of a planted value in a text count as a leak."""


def shown(texts: list[str], planted: list[str]) -> list[tuple[str, str]]:
    """``(value, text)`` for every text that shows a planted value, or a long piece of one.

    Pieces count only if as varied as real tokens (8+ distinct characters): a piece
    of ``"0000…"`` would match any long number.
    """
    found: list[tuple[str, str]] = []
    for value in planted:
        pieces = {value}
        windows = (value[i : i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1))
        pieces |= {w for w in windows if len(set(w)) >= 8}  # "0000…" would match any number
        found += [(value, t) for t in texts if any(p and p in t for p in pieces)]
    return found


def assert_no_fragments(texts: list[str], planted: list[str]) -> None:
    """Fail if a text shows a planted value, or a long enough piece of one."""
    leaks = shown(texts, planted)
    assert not leaks, f"{leaks[0][0][:40]!r} (planted) shown in {leaks[0][1][:200]!r}"


def error_texts(exc: BaseException) -> list[str]:
    """Everything about an error a user could print."""
    texts = [str(exc), repr(exc)]
    texts += [v for v in vars(exc).values() if isinstance(v, str)]
    return texts


# ---- a token endpoint that answers whatever it is told ---------------------------------------


@dataclass
class Answer:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False
    gzip: bool = False


class RawServer:
    """A token endpoint on 127.0.0.1 that sends ``answer`` verbatim (status, headers, bytes)."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.requests = 0
        self.bodies: list[bytes] = []
        """The body of every request received, in order."""
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                received = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.requests += 1
                    outer.bodies.append(received)
                    answer = outer.answer
                body = gzip.compress(answer.body, 1) if answer.gzip else answer.body
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    if answer.gzip:
                        self.send_header("Content-Encoding", "gzip")
                    if answer.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if answer.chunked:
                        for start in range(0, len(body), 65536):
                            piece = body[start : start + 65536]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.wfile.write(body)
                except OSError:  # the client stopped reading: that is the point of some tests
                    self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
