"""Tokens written to and read back from shared caches."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaveiro._token import TOKEN_FORMAT, Token

NOW = 1_800_000_000.0
ACCESS = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJlLXZhbHVl"

printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@given(
    access=printable,
    lifetime=st.floats(0, 1e6),
    scope=st.none() | st.sampled_from(["api.read", "a b c"]),
    refresh=st.none() | printable,
)
def test_round_trip(access: str, lifetime: float, scope: str | None, refresh: str | None):
    """to_json then from_json gives back an equal token."""
    token = Token(access, NOW + lifetime, NOW, scope=scope, refresh_token=refresh)
    assert Token.from_json(token.to_json()) == token
    assert Token.from_json(token.to_json().encode()) == token


def test_payload_names_its_format():
    """The JSON carries the format version."""
    assert json.loads(Token(ACCESS, NOW + 60, NOW).to_json())["chaveiro_token"] == TOKEN_FORMAT


def _valid() -> dict[str, object]:
    return json.loads(Token(ACCESS, NOW + 60, NOW, refresh_token="refresh-xyz").to_json())


def _with(**changes: object) -> bytes:
    return json.dumps({**_valid(), **changes}).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        Token(ACCESS, NOW + 60, NOW).to_json().encode()[:-9],  # truncated
        b"\x00\xff garbage \x81",
        b"[1, 2, 3]",
        b'{"access_token": "x", "expires_in": 3600}',  # some other program's token
        _with(chaveiro_token=TOKEN_FORMAT + 1),
        _with(chaveiro_token=True),
        _with(access_token=""),
        _with(access_token="two words"),
        _with(access_token="line\r\nbreak"),
        _with(token_type=None),
        _with(expires_at="tomorrow"),
        _with(expires_at=float("nan")),
        _with(issued_at=None),
        _with(refresh_expires_at=True),
        _with(scope=7),
        b"[" * 100_000,
        b" " * 300_000,
    ],
)
def test_anything_else_reads_as_no_token(payload: bytes, caplog: pytest.LogCaptureFixture):
    """A foreign, truncated, corrupted or other-version payload is no token, with a warning."""
    caplog.set_level(logging.WARNING, logger="chaveiro")
    assert Token.from_json(payload) is None
    assert Token.from_json(payload.decode("latin-1")) is None
    assert any("ignoring the token stored in" in r.getMessage() for r in caplog.records)
    text = caplog.text
    assert ACCESS not in text
    assert "refresh-xyz" not in text


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_never_raises_on_bytes(data: bytes):
    """Any bytes at all read as a token or as None, never as an exception."""
    result = Token.from_json(data)
    assert result is None or isinstance(result, Token)
