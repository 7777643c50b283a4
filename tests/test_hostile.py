"""Hostile token responses: only ChaveiroError comes out, and no secret or token with it."""

from __future__ import annotations

import base64
import contextlib
import json
import string

import httpx
import pytest
import requests
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from chaveiro import (
    ChaveiroError,
    ClientCredentialsAuth,
    ConfigurationError,
    InvalidTokenResponseError,
    MemoryCache,
    Token,
    TokenError,
)
from chaveiro._dialect import MAX_BODY_BYTES, OAUTH2, TokenRequest, build_request, parse_response
from chaveiro._manager import Policy, RawResponse, Send, TokenManager, run_sync
from chaveiro._token import Identity
from tests.conftest import CLIENT_ID, CLIENT_SECRET, assert_no_secrets
from tests.hostile import (
    NOW,
    TOKEN_URL,
    Answer,
    RawServer,
    assert_no_fragments,
    captured_logs,
    error_texts,
    responses,
    retry_afters,
)

FUZZ = settings(
    max_examples=300,
    derandomize=True,  # the same cases on every run; benchmarks/outage.py explores more
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_secrets = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " é",
    min_size=6,
    max_size=40,
).filter(lambda s: s.strip() == s and s not in TOKEN_URL)


def _jwt(claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.sig"


_LONG = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9eyJzdWIi"


@FUZZ
@given(case=responses())
@example(case=(200, {}, json.dumps({"access_token": "t", "expires_in": 10**400}).encode(), []))
@example(case=(200, {}, json.dumps({"access_token": _jwt({"exp": 10**400})}).encode(), []))
@example(
    case=(200, {}, json.dumps({"access_token": "t", "refresh_expires_in": 10**400}).encode(), [])
)
@example(case=(200, {}, json.dumps({"access_token": "t", "expires_in": _LONG}).encode(), [_LONG]))
@example(case=(200, {}, json.dumps({"access_token": "t", _LONG: 1}).encode(), [_LONG]))
@example(case=(200, {}, b'{"access_token": "a\\r\\nX-Evil: 1"}', []))
def test_parse_response_raises_only_chaveiro_errors(case):
    """Any status, headers and body give a Token or a ChaveiroError, and never show a token."""
    status, headers, body, planted = case
    with captured_logs() as logs:
        try:
            token = parse_response(OAUTH2, TOKEN_URL, status, headers, body, NOW)
        except TokenError as exc:
            assert_no_fragments(error_texts(exc), planted)
        else:
            assert isinstance(token, Token)
            assert token.expires_at > NOW
            hidden = [token.access_token, token.refresh_token or token.access_token]
            # a scope is shown; a very short "token" could match any word of the repr
            hidden = [v for v in hidden if len(v) >= 16 and v not in (token.scope or "")]
            assert_no_secrets([repr(token), str(token)], hidden)
    assert_no_fragments(logs.texts, planted)


def _flow_outcome(secret: str, raw: RawResponse) -> Token | ChaveiroError:
    """Drive one token flow by hand (sans I/O) and answer its request with ``raw``."""
    settings_ = _settings_for(secret)
    manager = TokenManager(
        OAUTH2,
        settings_,
        Identity.of(TOKEN_URL, CLIENT_ID, secret),
        MemoryCache(),
        clock=lambda: NOW,
        policy=Policy(attempts=1),
    )
    driver = run_sync(manager.flow(), manager.cache)
    try:
        item = next(driver)
        assert isinstance(item, Send)
        item = driver.send(raw)
    except ChaveiroError as exc:
        return exc
    finally:
        driver.close()
    assert isinstance(item, Token)
    return item


def _settings_for(secret: str):
    auth = ClientCredentialsAuth(TOKEN_URL, CLIENT_ID, secret, auth_method="client_secret_post")
    return auth._settings


def _echo(
    headers: dict[str, str], body: bytes, secret: str, where: str
) -> tuple[dict[str, str], bytes]:
    """The answer of a provider that echoes ``secret`` at ``where``."""
    if where == "body start":
        return headers, f"{secret} ".encode() + body
    if where == "body end":
        return headers, body + f" {secret}".encode()
    if where == "description":
        echo = {"error": "invalid_client", "error_description": f"bad {secret}"}
        return headers, json.dumps(echo).encode()
    return {**headers, "Location": f"https://x.example/?s={secret}"}, body


@FUZZ
@given(
    case=responses(),
    secret=_secrets,
    where=st.sampled_from(["body start", "body end", "description", "header"]),
)
def test_a_provider_echoing_the_secret_does_not_leak_it(case, secret, where):
    """Whatever the answer, and wherever the provider echoes the client secret, it is not shown."""
    status, headers, body, planted = case
    assume(not any(secret in value for value in planted))  # a secret is not part of a token
    # A secret that our own words already hold ("TokenE", say) cannot be told apart.
    canary = "~canary~"
    fixed = _flow_outcome(canary, RawResponse(status, *_echo(headers, body, canary, where)))
    if isinstance(fixed, ChaveiroError):
        assume(not any(secret in text for text in error_texts(fixed)))
    headers, body = _echo(headers, body, secret, where)
    with captured_logs() as logs:
        outcome = _flow_outcome(secret, RawResponse(status, headers, body))
    if isinstance(outcome, ChaveiroError):
        assert_no_secrets(error_texts(outcome), [secret])
        assert_no_fragments(error_texts(outcome), planted)
    assert_no_secrets(logs.texts, [secret])
    assert_no_fragments(logs.texts, planted)


@pytest.mark.parametrize("cut", [150, 295, 299])
def test_an_echoed_secret_is_not_cut_in_half_by_an_excerpt(cut: int):
    """A secret that straddles the excerpt's end does not leave its first half behind."""
    secret = "half-of-this-secret-is-still-a-secret"
    body = json.dumps({"error": "invalid_client", "error_description": "x" * cut + secret})
    outcome = _flow_outcome(secret, RawResponse(400, {}, body.encode()))
    assert isinstance(outcome, ChaveiroError)
    assert_no_secrets(error_texts(outcome), [secret[:8]])


@FUZZ
@given(value=retry_afters)
def test_retry_after_never_raises(value):
    """Retry-After in any form gives seconds within [0, 3600], or None."""
    from chaveiro._dialect import parse_retry_after  # noqa: PLC0415

    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0 <= seconds <= 3600


_any_text = st.text(max_size=30) | st.sampled_from(["", " ", "\ud800", "é&=+ %", "\r\n"])


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # short HS256 secrets
@FUZZ
@given(
    client_id=_any_text,
    secret=st.sampled_from(["", " "]) | _any_text.map(lambda t: f"Zq9{t}"),
    scope=st.none() | _any_text | st.lists(_any_text, max_size=3),
    method=st.sampled_from(
        [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_json",
            "client_secret_jwt",
            "x",
        ]
    ),
    extra=st.dictionaries(_any_text, _any_text, max_size=3),
)
def test_build_request_from_any_settings(client_id, secret, scope, method, extra):
    """Any settings give a sendable token request or a ConfigurationError at construction."""
    try:
        auth = ClientCredentialsAuth(
            TOKEN_URL, client_id, secret, scope=scope, auth_method=method, extra_params=extra
        )
    except ConfigurationError as exc:
        message = str(exc)
        assert not secret.strip() or secret.strip() not in message
        return
    request = build_request(OAUTH2, auth._settings, NOW)
    assert isinstance(request, TokenRequest)
    assert isinstance(request.body, bytes)
    for name, value in request.headers:
        name.encode("ascii")
        value.encode("ascii")
        assert "\r" not in value
        assert "\n" not in value


# ---- over HTTP ------------------------------------------------------------------------------


def _token_body(padding: int = 0) -> bytes:
    body = {"access_token": "a-token", "token_type": "Bearer", "expires_in": 60}
    text = json.dumps(body)
    return (text[:-1] + " " * padding + "}").encode()


def _exactly_max() -> bytes:
    base = _token_body()
    return _token_body(MAX_BODY_BYTES - len(base))


HUGE = [
    pytest.param(Answer(body=b"x" * (MAX_BODY_BYTES + 1)), id="content-length"),
    pytest.param(Answer(body=b" " * (3 * MAX_BODY_BYTES), chunked=True), id="chunked"),
    pytest.param(Answer(body=_token_body(8 * MAX_BODY_BYTES), gzip=True), id="gzip-bomb"),
]


@pytest.mark.parametrize("answer", HUGE)
def test_requests_reads_at_most_one_mib(answer: Answer):
    """requests: a body over 1 MiB (plain, chunked or gzip) is refused, not loaded."""
    with RawServer() as raw:
        raw.answer = answer
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        with pytest.raises(InvalidTokenResponseError, match="more than 1048576 bytes"):
            auth.get_token()


@pytest.mark.parametrize("answer", HUGE)
def test_httpx_reads_at_most_one_mib(answer: Answer):
    """httpx: a body over 1 MiB (plain, chunked or gzip) is refused, not loaded."""
    with RawServer() as raw:
        raw.answer = answer
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        with httpx.Client(auth=auth) as client, pytest.raises(InvalidTokenResponseError):
            client.get("http://127.0.0.1:9/api")


# Stopping early leaves the stream iterators of httpx and httpcore (async generators)
# unexhausted, which trio reports when they are garbage collected: encode/httpx#3686.
# The connection itself is closed; only those reports are ignored here.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object (Response|BoundAsyncStream"
    "|AsyncResponseStream|PoolByteStream|HTTP11ConnectionByteStream|AsyncHTTP11Connection)\\."
    ":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.anyio
@pytest.mark.parametrize("answer", HUGE)
async def test_async_httpx_reads_at_most_one_mib(answer: Answer):
    """httpx async: a body over 1 MiB is refused, and so is aget_token's."""
    with RawServer() as raw:
        raw.answer = answer
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        async with httpx.AsyncClient(auth=auth) as client:
            with pytest.raises(InvalidTokenResponseError):
                await client.get("http://127.0.0.1:9/api")
        with pytest.raises(InvalidTokenResponseError):
            await ClientCredentialsAuth(raw.url, "other", CLIENT_SECRET).aget_token()


def test_a_body_of_exactly_one_mib_is_read():
    """The cap is 1 MiB: a padded token response of exactly that size still works."""
    with RawServer() as raw:
        raw.answer = Answer(headers=[("Content-Type", "application/json")], body=_exactly_max())
        assert len(raw.answer.body) == MAX_BODY_BYTES
        assert ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET).get_token()
        with httpx.Client() as client:
            token = ClientCredentialsAuth(raw.url, "other", CLIENT_SECRET)
            request = client.build_request("GET", "http://127.0.0.1:9/")
            flow = token.sync_auth_flow(request)
            token_request = next(flow)
            response = client.send(token_request)
            assert flow.send(response) is request
            assert request.headers["Authorization"] == "Bearer a-token"


ODD = [
    Answer(200, [("Content-Type", "text/html")], b"<html><title>Sign in</title></html>"),
    Answer(200, [("Content-Type", "application/json")], b"\xff\xfe\x00{not utf-8"),
    Answer(200, [("Content-Type", "application/json")], b'{"access_token": "a\\r\\nX-Evil: 1"}'),
    Answer(200, [], b""),
    Answer(502, [("Content-Type", "text/html")], b"<h1>Bad gateway</h1>" * 5000),
    Answer(418, [("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")], b"\x00\x01"),
    Answer(302, [("Location", "https://evil.example/" + "t" * 40)], b""),
]


@pytest.mark.parametrize("answer", ODD, ids=lambda a: f"{a.status}-{a.body[:12]!r}")
def test_odd_answers_over_http_are_typed(answer: Answer):
    """HTML, non-UTF-8, header-breaking tokens, empty bodies, odd statuses: typed errors."""
    with RawServer() as raw:
        raw.answer = answer
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        with pytest.raises(TokenError) as first:
            requests.get("http://127.0.0.1:9/api", auth=auth, timeout=5)
        other = ClientCredentialsAuth(raw.url, "httpx-client", CLIENT_SECRET, max_attempts=1)
        with httpx.Client(auth=other) as client, pytest.raises(TokenError) as second:
            client.get("http://127.0.0.1:9/api")
    for error in (first.value, second.value):
        assert "\n" not in str(error)
        assert len(str(error)) < 700
        assert_no_secrets(error_texts(error), [CLIENT_SECRET, "t" * 40])


@settings(max_examples=25, deadline=None, database=None)
@given(
    status=st.integers(200, 599),
    headers=st.lists(
        st.tuples(
            st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=10),
            st.text(alphabet=string.printable.strip(), max_size=30),
        ).filter(lambda h: h[0].lower() not in ("content-length", "transfer-encoding")),
        max_size=3,
    ),
    body=st.binary(max_size=200) | st.builds(lambda s: s.encode(), st.text(max_size=200)),
)
def test_random_answers_over_http_are_typed(status, headers, body):
    """Random statuses, headers and bodies over real HTTP: a Token or a ChaveiroError."""
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    with RawServer() as raw:
        raw.answer = Answer(status, headers, body)
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        with contextlib.suppress(ChaveiroError):
            auth.get_token()
