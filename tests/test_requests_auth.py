"""ClientCredentialsAuth with requests, over real HTTP to the local token server."""

from __future__ import annotations

import gc
import io
import threading
import time

import pytest
import requests

from chaveiro import (
    ChaveiroError,
    ClientCredentialsAuth,
    CredentialsRejectedError,
    InvalidTokenResponseError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
)
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock, join_renewals


def test_thousand_requests_make_one_token_request(server: FakeTokenServer, make_auth):
    """1,000 requests share one token."""
    session = requests.Session()
    session.auth = make_auth()
    for _ in range(1000):
        assert session.get(server.api_url()).status_code == 200
    assert server.token_requests == 1
    assert server.api_requests == 1000


def test_new_auth_object_per_call_still_reuses(server: FakeTokenServer, make_auth):
    """Auth objects with the same identity share the process-wide token."""
    for _ in range(20):
        assert requests.get(server.api_url(), auth=make_auth(), timeout=5).status_code == 200
    assert server.token_requests == 1


def test_different_scope_is_a_different_token(server: FakeTokenServer, make_auth):
    """Another scope is another identity, so another token."""
    requests.get(server.api_url(), auth=make_auth(scope="a"), timeout=5)
    requests.get(server.api_url(), auth=make_auth(scope="b"), timeout=5)
    requests.get(server.api_url(), auth=make_auth(scope="a"), timeout=5)
    assert server.token_requests == 2


def test_renews_before_expiry(server: FakeTokenServer, make_auth):
    """Inside the leeway window the token is renewed; before it, reused."""
    clock = FakeClock(time.time())
    auth = make_auth(clock=clock, leeway=30)
    session = requests.Session()
    session.auth = auth
    session.get(server.api_url())
    clock.now += 3600 - 31
    session.get(server.api_url())
    assert server.token_requests == 1
    clock.now += 2  # now 29 s before expiry
    assert session.get(server.api_url()).status_code == 200
    join_renewals()
    assert server.token_requests == 2
    assert auth.stats.renewed == 1


def test_401_renews_and_replays_once(server: FakeTokenServer, make_auth):
    """A 401 for the token we hold renews it and replays the request once."""
    session = requests.Session()
    session.auth = make_auth()
    session.get(server.api_url())
    server.revoke_all()
    response = session.post(server.api_url(), data=b"payload")
    assert response.status_code == 200
    assert response.json()["body_length"] == len(b"payload")
    assert [r.status_code for r in response.history] == [401]
    assert server.token_requests == 2


def test_401_replays_a_seekable_file_body(server: FakeTokenServer, make_auth):
    """A file body is rewound and sent again in full."""
    session = requests.Session()
    session.auth = make_auth()
    session.get(server.api_url())
    server.revoke_all()
    response = session.put(server.api_url(), data=io.BytesIO(b"x" * 5000))
    assert response.status_code == 200
    assert response.json()["body_length"] == 5000


def test_401_with_generator_body_is_not_replayed(server: FakeTokenServer, make_auth):
    """A body that cannot be replayed gets the 401 back."""
    session = requests.Session()
    session.auth = make_auth()
    session.get(server.api_url())
    server.revoke_all()
    response = session.post(server.api_url(), data=(c for c in [b"a", b"b"]))
    assert response.status_code == 401
    assert server.token_requests == 1


def test_persistent_401_is_not_looped(server: FakeTokenServer, make_auth):
    """If the fresh token is also refused, the 401 goes back: never a loop."""
    session = requests.Session()
    session.auth = make_auth()
    response = session.get(server.api_url("/api/resource?status=401"))
    assert response.status_code == 401
    assert server.token_requests == 2
    assert server.api_requests == 2


def test_replay_can_be_switched_off(server: FakeTokenServer, make_auth):
    """replay_on_401=False gives the 401 straight back."""
    session = requests.Session()
    session.auth = make_auth(replay_on_401=False)
    session.get(server.api_url())
    server.revoke_all()
    assert session.get(server.api_url()).status_code == 401
    assert server.token_requests == 1


def test_non_401_errors_pass_through(server: FakeTokenServer, make_auth):
    """A 500 from the API is the caller's business: no renewal, no replay."""
    session = requests.Session()
    session.auth = make_auth()
    assert session.get(server.api_url("/api/x?status=500")).status_code == 500
    assert server.token_requests == 1
    assert server.api_requests == 1


def test_32_threads_with_an_expired_token_make_one_request(server: FakeTokenServer, make_auth):
    """Threads that all find the token expired at once cause a single token request."""
    clock = FakeClock(time.time())
    auth = make_auth(clock=clock)
    session = requests.Session()
    session.auth = auth
    session.get(server.api_url())
    clock.now += 7200
    server.token_delay = 0.2
    barrier = threading.Barrier(32)
    results: list[int] = []

    def worker() -> None:
        barrier.wait()
        results.append(requests.get(server.api_url(), auth=auth, timeout=10).status_code)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 32
    assert server.token_requests == 2


def test_16_concurrent_401s_make_one_renewal(server: FakeTokenServer, make_auth):
    """Concurrent 401s for the same token renew it once; every request succeeds."""
    auth = make_auth()
    requests.get(server.api_url(), auth=auth, timeout=5)
    server.revoke_all()
    server.token_delay = 0.2
    barrier = threading.Barrier(16)
    results: list[int] = []

    def worker() -> None:
        session = requests.Session()
        barrier.wait()
        results.append(session.get(server.api_url(), auth=auth, timeout=10).status_code)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 16
    assert server.token_requests == 2


def test_failed_fetch_reaches_every_waiter(server: FakeTokenServer, make_auth):
    """Waiters share the leader's failure instead of each asking again."""
    auth = make_auth(max_attempts=1)
    server.fail(Failure.reject())
    server.token_delay = 0.3
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            requests.get(server.api_url(), auth=auth, timeout=10)
        except ChaveiroError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8
    assert all(isinstance(e, CredentialsRejectedError) for e in errors)
    assert server.token_requests == 1


def test_token_request_uses_the_given_session(server: FakeTokenServer, make_auth):
    """session= carries the token request (its adapters, proxies and TLS settings apply)."""
    seen: list[str] = []
    token_session = requests.Session()
    token_session.hooks["response"].append(lambda r, **_: seen.append(r.url))
    session = requests.Session()
    session.auth = make_auth(session=token_session)
    session.get(server.api_url())
    assert seen == [server.oauth_token_url]


def test_get_token_for_non_http_use(server: FakeTokenServer, make_auth):
    """get_token() returns the shared token without an API call."""
    auth = make_auth()
    token = auth.get_token()
    assert token.access_token in server.issued_tokens
    assert auth.get_token() is token
    assert server.token_requests == 1


def test_rejected_credentials_error(server: FakeTokenServer, make_auth):
    """A wrong secret gives CredentialsRejectedError with the provider's error code."""
    auth = make_auth(client_secret="wrong-secret")
    with pytest.raises(CredentialsRejectedError) as info:
        requests.get(server.api_url(), auth=auth, timeout=5)
    assert info.value.error == "invalid_client"
    assert "Check the client id and secret" in str(info.value)


def test_rejected_credentials_are_not_resent_on_every_call(server: FakeTokenServer, make_auth):
    """After a rejection, callers get the error without new token requests for a while."""
    auth = make_auth(client_secret="wrong-secret")
    for _ in range(5):
        with pytest.raises(CredentialsRejectedError):
            requests.get(server.api_url(), auth=auth, timeout=5)
    assert server.token_requests == 1


def test_html_error_page_gives_one_line(server: FakeTokenServer, make_auth):
    """An HTML error page becomes a short one-line message with the status."""
    server.fail(Failure.html(500))
    with pytest.raises(TokenEndpointError) as info:
        requests.get(server.api_url(), auth=make_auth(max_attempts=1), timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "<" not in message
    assert "500" in message
    assert info.value.status_code == 500
    assert len(message) < 400


def test_retries_a_503_then_succeeds(server: FakeTokenServer, make_auth):
    """A transient 503 is retried and the request succeeds."""
    server.fail(Failure.status(503), times=1)
    session = requests.Session()
    session.auth = make_auth()
    assert session.get(server.api_url()).status_code == 200
    assert server.token_requests == 2


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (Failure.malformed(), "not a JSON object"),
        (Failure.missing_token(), "without an access_token"),
    ],
)
def test_malformed_responses(server: FakeTokenServer, make_auth, failure: Failure, words: str):
    """A 200 that is not a token says what is wrong."""
    server.fail(failure)
    with pytest.raises(InvalidTokenResponseError, match=words):
        requests.get(server.api_url(), auth=make_auth(), timeout=5)


def test_unreachable_endpoint():
    """No server at the token URL gives TokenEndpointUnreachableError."""
    auth = ClientCredentialsAuth(
        "http://127.0.0.1:9/token", CLIENT_ID, CLIENT_SECRET, max_attempts=1
    )
    with pytest.raises(TokenEndpointUnreachableError, match="Could not reach"):
        auth.get_token()


def test_dropped_connection_is_unreachable(server: FakeTokenServer, make_auth):
    """A connection closed without an answer is a typed error too."""
    server.fail(Failure.drop())
    with pytest.raises(TokenEndpointUnreachableError):
        make_auth(max_attempts=1).get_token()


def test_token_not_sent_across_hosts_on_redirect(server: FakeTokenServer, make_auth):
    """A redirect to another host does not carry the token."""
    with FakeTokenServer() as other:
        target = other.api_url().replace("127.0.0.1", "localhost")
        session = requests.Session()
        session.auth = make_auth()
        response = session.get(server.api_url(f"/api/redirect?to={target}"))
        assert response.status_code == 401
        assert "authorization" not in other.api_request_log[-1].headers


def test_only_hosts_limits_where_the_token_goes(server: FakeTokenServer, make_auth):
    """only_hosts attaches the token to matching hosts only."""
    session = requests.Session()
    session.auth = make_auth(only_hosts=["api.example.com"])
    assert session.get(server.api_url()).status_code == 401
    assert server.token_requests == 0
    session.auth = make_auth(only_hosts=["127.0.0.1"])
    assert session.get(server.api_url()).status_code == 200


def test_auth_method_post_sends_secret_in_body(server: FakeTokenServer, make_auth):
    """client_secret_post puts the credentials in the form."""
    make_auth(auth_method="client_secret_post").get_token()
    recorded = server.token_request_log[-1]
    assert b"client_secret=" in recorded.body
    assert "authorization" not in recorded.headers


def test_one_session_for_the_api_and_the_token_request(server: FakeTokenServer, make_auth):
    """session= may be the very session whose auth this is: no recursion, one token request."""
    session = requests.Session()
    session.auth = make_auth(session=session)
    assert session.get(server.api_url()).status_code == 200
    assert server.token_requests == 1


def test_raise_for_status_hook_on_the_token_session(server: FakeTokenServer, make_auth):
    """A session hook that raises for an error status still gives our typed error, not retried."""
    session = requests.Session()
    session.hooks["response"].append(lambda r, **_: r.raise_for_status())
    auth = make_auth(client_secret="wrong", session=session)
    with pytest.raises(CredentialsRejectedError, match="invalid_client"):
        auth.get_token()
    assert server.token_requests == 1


def _pools(session: requests.Session) -> int:
    return len(session.get_adapter("http://").poolmanager.pools)


def test_close_closes_our_own_session_only(server: FakeTokenServer, make_auth):
    """close() closes the session chaveiro made, not a given one; the auth object goes on."""
    auth = make_auth()
    auth.get_token()
    own = auth._own_session._session
    assert own is not None
    assert _pools(own) == 1
    auth.close()
    assert _pools(own) == 0
    given = requests.Session()
    mine = make_auth(session=given, scope="other")
    mine.get_token()
    mine.close()
    assert _pools(given) == 1
    given.close()
    server.revoke_all()
    assert requests.get(server.api_url(), auth=auth, timeout=5).status_code == 200  # reopened
    auth.close()


def test_our_session_is_closed_when_the_auth_object_goes_away(server: FakeTokenServer, make_auth):
    """No close() call: the session is closed when the auth object is garbage-collected."""
    auth = make_auth()
    auth.get_token()
    own = auth._own_session._session
    assert own is not None
    assert _pools(own) == 1
    del auth
    gc.collect()
    assert _pools(own) == 0
