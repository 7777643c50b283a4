"""TLS: a real HTTPS token server with a private CA (trustme); verification is always on."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest
import requests
import trustme

from chaveiro import ClientCredentialsAuth, TokenEndpointUnreachableError
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET


@pytest.fixture
def ca_file(ca: trustme.CA) -> Iterator[str]:
    with ca.cert_pem.tempfile() as path:
        yield path


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts the token requests a session tries to send (a failed handshake has no answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def send(self, request, **kwargs):
        self.sent += 1
        return super().send(request, **kwargs)


def _assert_clear_tls_error(error: TokenEndpointUnreachableError) -> None:
    message = str(error)
    assert "TLS verification failed" in message
    assert "session.verify" in message
    assert "verify=" in message
    assert not error.retryable
    assert CLIENT_SECRET not in message


def test_verification_is_on_by_default_with_requests(tls_server: FakeTokenServer):
    """requests: an untrusted certificate is a clear TLS error, asked once, not retried."""
    adapter = CountingAdapter()
    session = requests.Session()
    session.mount("https://", adapter)
    auth = ClientCredentialsAuth(
        tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, session=session
    )
    for _ in range(3):
        with pytest.raises(TokenEndpointUnreachableError) as info:
            auth.get_token()
        _assert_clear_tls_error(info.value)
    assert adapter.sent == 1  # no retries, then the cool-down answers
    assert tls_server.token_requests == 0


def test_private_ca_through_the_requests_session(
    tls_server: FakeTokenServer, ca_file: str, monkeypatch: pytest.MonkeyPatch
):
    """requests: session.verify = the CA file makes the token request (and the API) work."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca-bundle.crt")
    session = requests.Session()
    session.verify = ca_file
    auth = ClientCredentialsAuth(
        tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET, session=session
    )
    assert auth.get_token()  # session.verify wins over REQUESTS_CA_BUNDLE for the token request
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session.auth = auth
    assert session.get(tls_server.api_url()).status_code == 200
    assert tls_server.token_requests == 1


def test_verification_is_on_by_default_with_httpx(tls_server: FakeTokenServer):
    """httpx: a client without the CA gets a clear TLS error for the token request."""
    auth = ClientCredentialsAuth(tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    with httpx.Client(auth=auth) as client, pytest.raises(TokenEndpointUnreachableError) as info:
        client.get(tls_server.api_url())
    _assert_clear_tls_error(info.value)
    assert tls_server.token_requests == 0


def test_private_ca_through_the_httpx_client(
    tls_server: FakeTokenServer, client_context: ssl.SSLContext
):
    """httpx: httpx.Client(verify=ssl_context) carries the token request too."""
    auth = ClientCredentialsAuth(tls_server.oauth_token_url, CLIENT_ID, CLIENT_SECRET)
    with httpx.Client(auth=auth, verify=client_context) as client:
        assert client.get(tls_server.api_url()).status_code == 200
    assert tls_server.token_requests == 1


@pytest.mark.anyio
async def test_async_tls(tls_server: FakeTokenServer, client_context: ssl.SSLContext):
    """httpx async: without the CA a clear TLS error; with it, the client and aget_token work."""
    url = tls_server.oauth_token_url
    async with httpx.AsyncClient(auth=ClientCredentialsAuth(url, CLIENT_ID, CLIENT_SECRET)) as c:
        with pytest.raises(TokenEndpointUnreachableError) as info:
            await c.get(tls_server.api_url())
    _assert_clear_tls_error(info.value)
    auth = ClientCredentialsAuth(url, CLIENT_ID, CLIENT_SECRET, scope="other")  # no cool-down
    async with httpx.AsyncClient(auth=auth, verify=client_context) as client:
        assert (await client.get(tls_server.api_url())).status_code == 200
    third = ClientCredentialsAuth(url, CLIENT_ID, CLIENT_SECRET, scope="third")
    async with httpx.AsyncClient(verify=client_context) as client:
        token = await third.aget_token(client=client)
    assert token.access_token in tls_server.issued_tokens
    assert tls_server.token_requests == 2


def test_wrong_host_name_is_a_verification_failure(ca: trustme.CA):
    """A certificate for another host fails verification with the same clear message."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("idp.example.com").configure_cert(context)
    with FakeTokenServer(ssl_context=context) as srv, ca.cert_pem.tempfile() as path:
        session = requests.Session()
        session.verify = path
        auth = ClientCredentialsAuth(srv.oauth_token_url, CLIENT_ID, CLIENT_SECRET, session=session)
        with pytest.raises(TokenEndpointUnreachableError) as info:
            auth.get_token()
        _assert_clear_tls_error(info.value)
