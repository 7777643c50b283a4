"""No client secret and no issued token ever shows up in logs, errors, or reprs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, quote_plus

import aiohttp
import anyio
import httpx
import pytest
import requests

from chaveiro import ChaveiroError, ClientCredentialsAuth, CredentialsRejectedError
from chaveiro._dialect import OAUTH2, parse_response
from chaveiro._errors import excerpt
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock, assert_no_secrets
from tests.hostile import Answer, RawServer


def _texts_of(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


def _shown(texts: list[str], action: Callable[[], object]) -> None:
    """Run ``action``; keep what it shows: its result's repr, or every text of our error."""
    try:
        result = action()
    except ChaveiroError as exc:
        texts.extend(_texts_of(exc))
    else:
        texts.append(repr(result))


def test_no_secret_in_any_log_or_error(server: FakeTokenServer, caplog: pytest.LogCaptureFixture):
    """Every scenario, failures included: logs (all loggers, DEBUG) and errors hold no secret."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    clock = FakeClock()

    def auth(**kwargs: object) -> ClientCredentialsAuth:
        options: dict[str, object] = {
            "token_url": server.oauth_token_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "clock": clock,
            "max_attempts": 2,
            "deadline": 2.0,
        }
        options.update(kwargs)
        made = ClientCredentialsAuth(**options)  # type: ignore[arg-type]
        texts.extend([repr(made), str(made)])
        return made

    def attempt(action: Callable[[], object]) -> None:
        _shown(texts, action)

    good = auth()
    session = requests.Session()
    session.auth = good
    attempt(lambda: session.get(server.api_url()))
    attempt(good.get_token)
    server.revoke_all()
    attempt(lambda: session.get(server.api_url()))
    clock.now += 7200
    with httpx.Client(auth=good) as client:
        attempt(lambda: client.get(server.api_url()))
        server.revoke_all()
        attempt(lambda: client.get(server.api_url()))

    async def use_async() -> None:
        async with httpx.AsyncClient(auth=good) as client:
            server.revoke_all()
            await client.get(server.api_url())
        texts.append(repr(await good.aget_token()))

    anyio.run(use_async)
    texts.append(repr(good.stats))
    texts.append(repr(good._cache))  # the cache that holds the tokens shows how many, not which

    async def through_aiohttp(auth: ClientCredentialsAuth, revoke: bool = False) -> object:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            if revoke:
                server.revoke_all()
            async with session.get(server.api_url()) as response:
                return (response.status, await response.text())

    async def aattempt(action: Callable[[], Awaitable[object]]) -> None:
        try:
            result = await action()
        except ChaveiroError as exc:
            texts.extend(_texts_of(exc))
        else:
            texts.append(repr(result))

    async def use_aiohttp() -> None:
        clock.now += 7200
        await aattempt(lambda: through_aiohttp(good))
        await aattempt(lambda: through_aiohttp(good, revoke=True))
        for method in ("client_secret_basic", "client_secret_post", "client_secret_jwt"):
            bad = auth(client_secret=CLIENT_SECRET + "-wrong", auth_method=method, scope="aio")
            await aattempt(lambda bad=bad: through_aiohttp(bad))
        for index, failure in enumerate([Failure.html(500), Failure.malformed(), Failure.drop()]):
            server.fail(failure)
            await aattempt(lambda index=index: through_aiohttp(auth(scope=f"aio-{index}")))
            server.clear_failures()
        await aattempt(lambda: through_aiohttp(auth(token_url="http://127.0.0.1:9/token")))

    before = len(texts)
    asyncio.run(use_aiohttp())
    assert len(texts) - before >= 3 * 6 + 2  # every aiohttp failure was seen and scanned

    for method in (
        "client_secret_basic",
        "client_secret_post",
        "client_secret_json",
        "client_secret_jwt",
    ):
        bad = auth(client_secret=CLIENT_SECRET + "-wrong", auth_method=method)
        attempt(bad.get_token)
        with httpx.Client(auth=bad) as client:
            attempt(lambda client=client: client.get(server.api_url()))

    for index, failure in enumerate(
        [
            Failure.status(503, retry_after="0"),
            Failure.html(500),
            Failure.malformed(),
            Failure.missing_token(),
            Failure.too_many(retry_after="0"),
            Failure.drop(),
        ]
    ):
        server.fail(failure)
        attempt(auth(scope=f"scenario-{index}").get_token)
        attempt(
            lambda index=index: requests.get(
                server.api_url(), auth=auth(scope=f"s-{index}"), timeout=5
            )
        )
        server.clear_failures()

    unreachable = auth(token_url="http://127.0.0.1:9/token")
    attempt(unreachable.get_token)
    with httpx.Client(auth=unreachable) as client:
        attempt(lambda: client.get(server.api_url()))

    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(str(record.__dict__) for record in caplog.records)
    basic = base64.b64encode(
        f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()
    ).decode()
    secrets = [CLIENT_SECRET, basic, *server.issued_tokens]
    assert len(server.issued_tokens) >= 5
    assert len(texts) > 40
    assert_no_secrets(texts, secrets)


def test_the_scan_itself_can_fail():
    """The scanning helper does catch a leak (so the test above can fail)."""
    with pytest.raises(AssertionError):
        assert_no_secrets(["token is abc123secret"], ["abc123secret"])


@pytest.mark.parametrize(
    "reason",
    [
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "CERTIFICATE_VERIFY_FAILED",
    ],
)
def test_tls_reason_codes_are_never_redacted(reason: str):
    """OpenSSL reason codes are shown; a token of the same length next to them is not."""
    token = "AbCdEf0123456789GhIjKl0123456789MnOp"
    text = excerpt(f"[SSL: {reason}] alert ({token}) A00000100000100000_0")
    assert reason in text
    assert token not in text
    assert "A00000100000100000_0" not in text


# ---- redaction is for what is shown, never for what is read -----------------------------------


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_one_character_secret_still_reads_the_token(server: FakeTokenServer, client: str):
    """A secret of one letter occurs in every token answer ("access_token"): it still parses."""
    server.add_client("short-secret", "a")
    auth = ClientCredentialsAuth(server.oauth_token_url, "short-secret", "a")
    if client == "requests":
        status = requests.get(server.api_url(), auth=auth, timeout=10).status_code
    else:
        with httpx.Client(auth=auth, timeout=10) as http:
            status = http.get(server.api_url()).status_code
    assert status == 200
    assert auth.get_token().access_token == server.issued_tokens[0]
    assert server.token_requests == 1


def test_a_secret_inside_the_access_token_is_kept_in_it():
    """The token is used exactly as issued, even when the secret occurs inside it."""
    secret = "k3y-9f"
    issued = f"opaque.{secret}.{secret}-0123456789abcdef"
    with RawServer() as raw:
        raw.answer = Answer(body=json.dumps({"access_token": issued, "expires_in": 60}).encode())
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, secret)
        assert auth.get_token().access_token == issued


def test_a_refresh_token_sent_back_unchanged_stays_usable():
    """A server that answers a refresh with the same refresh token: the next refresh sends it."""
    refresh = "refresh-token-kept-0123456789"
    body = {"access_token": "at-1", "refresh_token": refresh, "expires_in": 60}
    clock = FakeClock()
    with RawServer() as raw:
        raw.answer = Answer(body=json.dumps(body).encode())
        auth = ClientCredentialsAuth(
            raw.url, CLIENT_ID, CLIENT_SECRET, use_refresh_token=True, clock=clock
        )
        for _ in range(3):
            auth.get_token()  # expired each time: fetched in this thread
            clock.now += 61
        sent = [dict(parse_qsl(b.decode())) for b in raw.bodies]
    assert [fields["grant_type"] for fields in sent] == [
        "client_credentials",
        "refresh_token",
        "refresh_token",
    ]
    assert [fields.get("refresh_token") for fields in sent[1:]] == [refresh, refresh]


def test_an_echoed_short_secret_is_still_hidden_in_the_error():
    """A rejection that echoes a short secret: the message hides it, the code is intact."""
    secret = "pw-7"
    answer = {"error": "invalid_client", "error_description": f"client secret {secret} is wrong"}
    with RawServer() as raw:
        raw.answer = Answer(status=401, body=json.dumps(answer).encode())
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, secret)
        with pytest.raises(CredentialsRejectedError) as caught:
            auth.get_token()
    assert caught.value.error == "invalid_client"
    assert_no_secrets([*_texts_of(caught.value), caught.value.error_description], [secret])


def test_a_warning_about_a_field_hides_the_secret(caplog: pytest.LogCaptureFixture):
    """The log record about an unreadable field that echoes the secret does not show it."""
    caplog.set_level(logging.WARNING, logger="chaveiro")
    body = json.dumps({"access_token": "t-1", "expires_in": "hunter2"}).encode()
    token = parse_response(
        OAUTH2, "https://idp.example/token", 200, {}, body, 1e9, secrets=["hunter2"]
    )
    assert token.access_token == "t-1"
    assert "expires_in" in caplog.text
    assert_no_secrets([caplog.text], ["hunter2"])


def test_no_supplied_assertion_in_any_log_or_error(caplog: pytest.LogCaptureFixture, tmp_path):
    """A supplied client assertion that the endpoint echoes back is cut out of every error.

    The assertion here is short (not token-looking), so only the scrub of what was
    sent can keep it out; the endpoint quotes it in its error_description.
    """
    import json  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415
    from urllib.parse import parse_qs  # noqa: PLC0415

    assertion = "sa.tok3n.echoed"

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            sent = parse_qs(self.rfile.read(length).decode()).get("client_assertion", [""])[0]
            body = json.dumps(
                {"error": "invalid_client", "error_description": f"bad assertion {sent}"}
            ).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Echo", sent)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    caplog.set_level(logging.DEBUG)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    texts: list[str] = []
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/token"
        token_file = tmp_path / "token"
        token_file.write_text(assertion + "\n")
        for index, source in enumerate(
            [{"client_assertion": lambda: assertion}, {"client_assertion_file": token_file}]
        ):
            auth = ClientCredentialsAuth(url, f"client-{index}", **source)  # type: ignore[arg-type]
            texts.extend([repr(auth), str(auth)])
            for use in (
                auth.get_token,
                lambda auth=auth: requests.get(url, auth=auth, timeout=5),
                lambda auth=auth: httpx.Client(auth=auth).get(url),
            ):
                with pytest.raises(ChaveiroError) as caught:
                    use()
                texts.extend(_texts_of(caught.value))
                texts.append(repr(vars(caught.value)))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(str(record.__dict__) for record in caplog.records)
    assert any("bad assertion" in text for text in texts)  # the echo was seen, scrubbed
    assert_no_secrets(texts, [assertion])


def test_no_private_key_or_proof_in_any_log_error_or_repr(caplog: pytest.LogCaptureFixture):
    """DPoP: the private key (PEM or its JWK ``d``) and every proof sent stay out of logs
    (all loggers, DEBUG), errors, tracebacks and reprs, through successes and failures."""
    from joserfc.jwk import ECKey  # noqa: PLC0415

    from chaveiro import DPoPNotSupportedError  # noqa: PLC0415
    from tests.dpop_keys import key_pem  # noqa: PLC0415

    caplog.set_level(logging.DEBUG)
    pem = key_pem("ec")
    texts: list[str] = []

    def attempt(action: Callable[[], object]) -> None:
        _shown(texts, action)

    def scan(auth: ClientCredentialsAuth, server: FakeTokenServer) -> None:
        texts.extend([repr(auth), str(auth), repr(auth._settings), repr(auth._manager.identity)])
        with requests.Session() as session:
            session.auth = auth
            attempt(lambda: session.get(server.api_url(), timeout=10))
            attempt(auth.get_token)
            server.rotate_dpop_nonce() if server.dpop_nonce else server.revoke_all()
            attempt(lambda: session.post(server.api_url(), data=b"x", timeout=10))
        attempt(lambda: anyio.run(auth.aget_token))
        with httpx.Client(auth=auth) as client:
            attempt(lambda: client.get(server.api_url()))

        async def through_aiohttp() -> object:
            async with (
                aiohttp.ClientSession(middlewares=(auth,)) as client,
                client.get(server.api_url()) as response,
            ):
                return response.status, await response.text()

        attempt(lambda: asyncio.run(through_aiohttp()))
        texts.append(repr(auth.stats))

    proofs: list[str] = []
    tokens: list[str] = []
    for options in ({"dpop": True}, {"dpop": True, "dpop_nonce": True}):
        with FakeTokenServer(**options) as server:  # type: ignore[arg-type]
            server.add_client(CLIENT_ID, CLIENT_SECRET)
            made = ClientCredentialsAuth(
                server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, dpop_key=pem
            )
            scan(made, server)
            server.dpop_nonce_rotation = "each_request" if server.dpop_nonce else "never"
            stubborn = ClientCredentialsAuth(
                server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, dpop_key=pem, scope="s2"
            )
            attempt(stubborn.get_token)
            skewed = ClientCredentialsAuth(
                server.oauth_token_url,
                CLIENT_ID,
                CLIENT_SECRET,
                dpop_key=pem,
                scope="s3",
                clock=FakeClock(time.time() + 3600),
            )
            attempt(skewed.get_token)  # its proofs' iat is refused
            proofs += [r.headers["dpop"] for r in server.token_request_log + server.api_request_log]
            tokens += server.issued_tokens
    with FakeTokenServer() as plain:
        plain.add_client(CLIENT_ID, CLIENT_SECRET)
        refused = ClientCredentialsAuth(
            plain.oauth_token_url, CLIENT_ID, CLIENT_SECRET, dpop_key=pem
        )
        with pytest.raises(DPoPNotSupportedError) as info:
            refused.get_token()
        texts.extend(_texts_of(info.value))
        tokens += plain.issued_tokens
    for bad in (pem[:-40], pem.replace(b"PRIVATE KEY-----\n", b"PRIVATE KEY-----\nAAAA", 1)):
        try:
            ClientCredentialsAuth("https://idp.example/token", "id", "secret", dpop_key=bad)
        except ChaveiroError as exc:
            texts.extend(_texts_of(exc))
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(str(record.__dict__) for record in caplog.records)
    private = ECKey.import_key(pem).as_dict(private=True)["d"]
    pem_lines = [line for line in pem.decode().splitlines() if "-----" not in line]
    assert len(proofs) >= 10
    assert len(texts) > 30
    assert_no_secrets(texts, [CLIENT_SECRET, str(private), *pem_lines, *proofs, *tokens])
