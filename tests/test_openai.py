"""The openai SDK's ``http_client=``: an OpenAI-compatible gateway behind client credentials.

The gateway is a stand-in on 127.0.0.1 (``/v1/models`` and ``/v1/chat/completions``)
that answers only a bearer token the fake token server issued and has not revoked:
it asks the fake server's protected API about each one. The client is built as
docs/mcp.md shows: ``OpenAI(base_url=..., api_key=<placeholder>,
http_client=DefaultHttpxClient(auth=auth))``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer
from tests._recorder import Answer, Recorder, Seen
from tests.conftest import CLIENT_ID, CLIENT_SECRET, assert_no_secrets

openai = pytest.importorskip("openai")

PLACEHOLDER = "not-used-the-gateway-wants-a-token"
"""The ``api_key`` the SDK insists on; chaveiro's token replaces it on every request."""


class Gateway:
    """Answers the two endpoints, each only with a token ``server`` vouches for."""

    def __init__(self, server: FakeTokenServer) -> None:
        self.check_url = server.api_url("/api/whoami")

    def __call__(self, seen: Seen) -> Answer:
        authorization = seen.headers.get("authorization", "")
        check = requests.get(self.check_url, headers={"Authorization": authorization}, timeout=10)
        if check.status_code != 200:
            error = {"message": "invalid token", "type": "invalid_request_error", "code": None}
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return _json(401, {"error": error}, headers)
        if seen.method == "GET" and seen.path == "/v1/models":
            model = {"id": "local-model", "object": "model", "created": 0, "owned_by": "gateway"}
            return _json(200, {"object": "list", "data": [model]})
        if seen.method == "POST" and seen.path == "/v1/chat/completions":
            asked = json.loads(seen.body)
            text = f"echo: {asked['messages'][-1]['content']}"
            if asked.get("stream"):
                return 200, {"Content-Type": "text/event-stream"}, _events(text)
            return _json(200, _completion(text))
        return _json(404, {"error": {"message": f"no route {seen.path}", "type": "not_found"}})


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return status, headers, json.dumps(body).encode()


def _completion(text: str) -> dict[str, object]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "local-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _events(text: str) -> bytes:
    """``text`` as a chat completion stream, one server-sent event per word."""
    events = []
    for n, word in enumerate(text.split(" ")):
        delta = {"content": word if n == 0 else f" {word}"}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        chunk = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 0}
        events.append({**chunk, "model": "local-model", "choices": [choice]})
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


@pytest.fixture
def gateway(server: FakeTokenServer) -> Iterator[Recorder]:
    with Recorder(Gateway(server)) as recorder:
        yield recorder


@pytest.fixture
def auth(server: FakeTokenServer) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)


def _ask(client: Any, text: str) -> Any:
    completion = client.chat.completions.create(
        model="local-model", messages=[{"role": "user", "content": text}]
    )
    return completion.choices[0].message.content


def _carried(gateway: Recorder) -> list[str]:
    """The Authorization header of every request the gateway saw, in order."""
    return [seen.headers.get("authorization", "") for seen in gateway.seen]


def test_many_calls_take_one_token_request_and_carry_the_token(
    server: FakeTokenServer, gateway: Recorder, auth: ClientCredentialsAuth
):
    with openai.OpenAI(
        base_url=gateway.url("/v1"),
        api_key=PLACEHOLDER,
        http_client=openai.DefaultHttpxClient(auth=auth),
    ) as client:
        answers = [_ask(client, f"question {n}") for n in range(5)]
        models = [model.id for model in client.models.list()]
    assert answers == [f"echo: question {n}" for n in range(5)]
    assert models == ["local-model"]
    assert server.token_requests == 1
    # On the wire: chaveiro's token, never the placeholder api_key nor the client secret.
    assert _carried(gateway) == [f"Bearer {server.issued_tokens[0]}"] * 6
    assert_no_secrets([seen.text() for seen in gateway.seen], [PLACEHOLDER, CLIENT_SECRET])


def test_a_revoked_token_is_renewed_and_the_call_replayed(
    server: FakeTokenServer, gateway: Recorder, auth: ClientCredentialsAuth
):
    with openai.OpenAI(
        base_url=gateway.url("/v1"),
        api_key=PLACEHOLDER,
        http_client=openai.DefaultHttpxClient(auth=auth),
    ) as client:
        assert _ask(client, "before") == "echo: before"
        server.revoke_all()
        assert _ask(client, "after") == "echo: after"
    first, second = server.issued_tokens
    assert server.token_requests == 2
    assert _carried(gateway) == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
    refused, replayed = gateway.seen[1:]
    assert refused.body == replayed.body  # the same call, sent again once


def test_a_stream_is_replayed_after_a_revoked_token_too(
    server: FakeTokenServer, gateway: Recorder, auth: ClientCredentialsAuth
):
    with openai.OpenAI(
        base_url=gateway.url("/v1"),
        api_key=PLACEHOLDER,
        http_client=openai.DefaultHttpxClient(auth=auth),
    ) as client:
        assert _ask(client, "before") == "echo: before"
        server.revoke_all()
        stream = client.chat.completions.create(
            model="local-model", messages=[{"role": "user", "content": "one more"}], stream=True
        )
        with stream:
            words = [chunk.choices[0].delta.content for chunk in stream]
    assert "".join(words) == "echo: one more"
    assert server.token_requests == 2
    refused, replayed = gateway.seen[1:]
    assert json.loads(replayed.body)["stream"] is True
    assert refused.body == replayed.body


def test_an_api_key_in_the_environment_never_reaches_the_gateway(
    server: FakeTokenServer,
    gateway: Recorder,
    auth: ClientCredentialsAuth,
    monkeypatch: pytest.MonkeyPatch,
):
    environment_key = "sk-from-the-environment-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", environment_key)
    with openai.OpenAI(
        base_url=gateway.url("/v1"), http_client=openai.DefaultHttpxClient(auth=auth)
    ) as client:
        assert _ask(client, "hello") == "echo: hello"
    assert _carried(gateway) == [f"Bearer {server.issued_tokens[0]}"]
    assert not [seen for seen in gateway.seen if environment_key in seen.text()]


@pytest.mark.anyio
async def test_the_async_client_shares_one_token_and_renews_a_revoked_one(
    server: FakeTokenServer, gateway: Recorder, auth: ClientCredentialsAuth
):
    async with openai.AsyncOpenAI(
        base_url=gateway.url("/v1"),
        api_key=PLACEHOLDER,
        http_client=openai.DefaultAsyncHttpxClient(auth=auth),
    ) as client:
        for n in range(3):
            completion = await client.chat.completions.create(
                model="local-model", messages=[{"role": "user", "content": f"q{n}"}]
            )
            assert completion.choices[0].message.content == f"echo: q{n}"
        assert server.token_requests == 1
        server.revoke_all()
        models = await client.models.list()
    assert [model.id for model in models.data] == ["local-model"]
    first, second = server.issued_tokens
    assert server.token_requests == 2
    assert _carried(gateway) == [f"Bearer {first}"] * 4 + [f"Bearer {second}"]
    assert not [seen for seen in gateway.seen if PLACEHOLDER in seen.text()]


def test_without_chaveiro_the_gateway_refuses_the_placeholder(gateway: Recorder):
    with (
        openai.OpenAI(base_url=gateway.url("/v1"), api_key=PLACEHOLDER) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        _ask(client, "hello")
    assert _carried(gateway) == [f"Bearer {PLACEHOLDER}"]
