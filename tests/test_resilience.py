"""Outages and slow endpoints: retries, cool-downs, renewal without waiting, timeouts, redirects."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from email.utils import formatdate

import anyio
import httpx
import pytest
import requests

from chaveiro import (
    ChaveiroError,
    ClientCredentialsAuth,
    ConfigurationError,
    CredentialsRejectedError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
)
from chaveiro._caches import MemoryCache
from chaveiro._dialect import OAUTH2
from chaveiro._errors import TokenEndpointError as _TokenEndpointError
from chaveiro._flight import Flight
from chaveiro._manager import CannotRetry, Policy, RawResponse, Send, TokenManager
from chaveiro._steps import Sleep
from chaveiro._token import Identity, Token
from chaveiro.testing import Failure, FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock, join_renewals
from tests.hostile import Answer, RawServer


def quick(auth: ClientCredentialsAuth) -> ClientCredentialsAuth:
    """Shrink the backoff between retries (not Retry-After) so tests stay fast."""
    policy = auth._manager.policy
    auth._manager.policy = dataclasses.replace(policy, backoff=0.01, backoff_cap=0.02)
    return auth


class GatedAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter that holds every request while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()

    def send(self, request, **kwargs):
        if not self.opened.is_set():
            self.entered.set()
            assert self.opened.wait(30)
        return super().send(request, **kwargs)


class GatedTransport(httpx.BaseTransport):
    """A user's httpx transport that holds token requests while the gate is closed."""

    def __init__(self, token_url: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.token_url = token_url
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == self.token_url and not self.opened.is_set():
            self.entered.set()
            assert self.opened.wait(30)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncGatedTransport(httpx.AsyncBaseTransport):
    """The same for async clients (asyncio or trio)."""

    def __init__(self, token_url: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.token_url = token_url
        self.opened: anyio.Event | None = None
        self.entered = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == self.token_url and self.opened is not None:
            self.entered.set()
            await self.opened.wait()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def sent_token(response) -> str:
    return response.request.headers["Authorization"].partition(" ")[2]


# ---- retries ----------------------------------------------------------------------------------


def test_503s_are_retried_until_success(server: FakeTokenServer, make_auth):
    """Two 503s, then a token: three token requests and the API call succeeds."""
    server.fail(Failure.status(503), times=2)
    auth = quick(make_auth())
    assert requests.get(server.api_url(), auth=auth, timeout=5).status_code == 200
    assert server.token_requests == 3


def test_retries_are_bounded_by_max_attempts(server: FakeTokenServer, make_auth):
    """A 503 that does not go away is asked exactly max_attempts times."""
    server.fail(Failure.status(502))
    auth = quick(make_auth(max_attempts=4))
    with pytest.raises(TokenEndpointError) as info:
        auth.get_token()
    assert info.value.status_code == 502
    assert server.token_requests == 4


def test_dropped_connection_is_retried_with_requests(server: FakeTokenServer, make_auth):
    """requests: a connection closed without an answer is retried within the same call."""
    server.fail(Failure.drop(), times=1)
    assert quick(make_auth()).get_token()
    assert server.token_requests == 2


def test_429_with_http_date_retry_after_is_retried(server: FakeTokenServer, make_auth):
    """A 429 whose Retry-After is an HTTP date is waited out and retried."""
    server.fail(Failure.too_many(retry_after=formatdate(time.time() + 1, usegmt=True)), times=1)
    assert make_auth().get_token()
    assert server.token_requests == 2


@pytest.mark.parametrize(
    "failure",
    [
        Failure.reject(),
        Failure.status(400),
        Failure.status(403),
        Failure.status(404),
        Failure.html(405),
        Failure.malformed(),
    ],
    ids=["invalid_client", "400", "403", "404", "405-html", "malformed-200"],
)
def test_client_errors_are_never_retried(server: FakeTokenServer, make_auth, failure: Failure):
    """4xx other than 429 (and a 200 that is not a token) are asked once, whatever max_attempts."""
    server.fail(failure)
    auth = quick(make_auth(max_attempts=5))
    for _ in range(3):
        with pytest.raises(ChaveiroError):
            auth.get_token()
    assert server.token_requests == 1


def test_retry_after_beyond_the_deadline_is_not_waited_for(server: FakeTokenServer, make_auth):
    """A Retry-After longer than the deadline ends the call now and becomes the cool-down."""
    server.fail(Failure.status(503, retry_after="60"))
    auth = make_auth(deadline=5)
    for _ in range(5):
        with pytest.raises(TokenEndpointError) as info:
            auth.get_token()
        assert info.value.retry_after == 60
    assert server.token_requests == 1


def _flow_steps(replies: list[object], **policy: object) -> list[object]:
    """Drive a token flow by hand; return every step it yields (sans I/O, no clock)."""
    now = 1_700_000_000.0
    auth = ClientCredentialsAuth("https://idp.example/token", CLIENT_ID, CLIENT_SECRET)
    manager = TokenManager(
        OAUTH2,
        auth._settings,
        Identity.of("https://idp.example/token", CLIENT_ID, CLIENT_SECRET),
        MemoryCache(),
        clock=lambda: now,
        policy=Policy(**policy),  # type: ignore[arg-type]
    )
    flow = manager.flow()
    steps: list[object] = []
    reply: object = None
    try:
        for answer in [None, *replies]:
            if isinstance(answer, BaseException):
                step = flow.throw(answer)
            else:
                step = flow.send(reply if answer is None else answer)
            steps.append(step)
            reply = None
            while not isinstance(step, Send):  # cache steps and sleeps need no reply
                step = flow.send(None)
                steps.append(step)
    except (StopIteration, _TokenEndpointError) as end:
        steps.append(end)
    return steps


def test_retry_after_seconds_and_dates_set_the_pause_exactly():
    """Sans I/O: the pause before a retry is the Retry-After, in seconds or as an HTTP date."""
    date = formatdate(1_700_000_000.0 + 12, usegmt=True)
    steps = _flow_steps(
        [
            RawResponse(503, {"Retry-After": "7"}, b""),
            RawResponse(429, {"Retry-After": date}, b""),
        ],
        attempts=3,
        deadline=60,
    )
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [7.0, 12.0]


def test_each_attempt_gets_what_is_left_of_the_deadline():
    """Sans I/O: every token request carries the deadline as its timeout (the clock is frozen)."""
    steps = _flow_steps([RawResponse(503, {}, b"")], attempts=2, deadline=9)
    assert [s.timeout for s in steps if isinstance(s, Send)] == [9, 9]


def test_a_caller_that_cannot_resend_gets_no_pointless_pause():
    """Sans I/O: when httpx ends the call on a network error, the flow fails at once."""
    error = TokenEndpointUnreachableError("no answer", token_url="https://idp.example/token")
    steps = _flow_steps([CannotRetry(error)], attempts=3)
    assert not any(isinstance(s, Sleep) for s in steps)
    assert steps[-1] is error


def test_backoff_is_full_jitter_capped_and_never_below_retry_after():
    """Backoff is uniform in [0, min(cap, base * 2**n)], and at least Retry-After."""
    policy = Policy(backoff=0.5, backoff_cap=5.0)
    for attempt in range(8):
        for _ in range(50):
            assert 0 <= policy.backoff_delay(attempt, None) <= min(5.0, 0.5 * 2**attempt)
    assert policy.backoff_delay(0, 3.0) == 3.0


def test_cooldown_grows_with_failures_and_is_capped():
    """Cool-down doubles per consecutive failure up to the cap; Retry-After sets it when given."""
    policy = Policy()
    failing = TokenEndpointError("x", status_code=503)
    assert [policy.cooldown_for(failing, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    rejected = CredentialsRejectedError("x", error="invalid_client")
    assert [policy.cooldown_for(rejected, n) for n in range(1, 4)] == [10, 20, 30]
    forbidden = TokenEndpointError("x", status_code=403)
    assert [policy.cooldown_for(forbidden, n) for n in range(1, 4)] == [10, 20, 30]
    told = TokenEndpointError("x", status_code=503, retry_after=2.0)
    assert [policy.cooldown_for(told, n) for n in range(1, 6)] == [2, 2, 2, 2, 2]


# ---- httpx: the token request goes through the user's client ------------------------------------


def test_httpx_retries_a_503_within_one_call(server: FakeTokenServer, make_auth):
    """httpx: a 503 answer comes back to the flow, which retries in the same call."""
    server.fail(Failure.status(503), times=1)
    with httpx.Client(auth=quick(make_auth())) as client:
        assert client.get(server.api_url()).status_code == 200
    assert server.token_requests == 2


def test_httpx_network_error_fails_fast_cools_down_then_retries(server: FakeTokenServer, make_auth):
    """httpx: a dropped token request fails that call once, then the cool-down, then a retry."""
    clock = FakeClock()
    server.fail(Failure.drop())
    with httpx.Client(auth=make_auth(clock=clock)) as client:
        for _ in range(5):
            with pytest.raises(TokenEndpointUnreachableError):
                client.get(server.api_url())
        assert server.token_requests == 1  # no retry inside the call, none in the cool-down
        server.clear_failures()
        clock.now += 1.01
        assert client.get(server.api_url()).status_code == 200
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_async_network_error_fails_fast_cools_down_then_retries(
    server: FakeTokenServer, make_auth
):
    """httpx async: the same, on asyncio and trio."""
    clock = FakeClock()
    server.fail(Failure.drop())
    async with httpx.AsyncClient(auth=make_auth(clock=clock)) as client:
        for _ in range(5):
            with pytest.raises(TokenEndpointUnreachableError):
                await client.get(server.api_url())
        assert server.token_requests == 1
        server.clear_failures()
        clock.now += 1.01
        assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_async_raise_for_status_hook_cannot_break_typed_errors(
    server: FakeTokenServer, make_auth
):
    """httpx async: a user's raise_for_status hook on a failing token request gives our error."""

    async def raise_for_status(response: httpx.Response) -> None:
        response.raise_for_status()

    hooks = {"response": [raise_for_status]}
    server.fail(Failure.status(503))
    async with httpx.AsyncClient(auth=make_auth(), event_hooks=hooks) as client:
        for _ in range(3):
            with pytest.raises(TokenEndpointError) as info:
                await client.get(server.api_url())
            assert info.value.status_code == 503
    assert server.token_requests == 1  # recorded as a failure: the cool-down applies


def test_users_trace_extension_still_sees_the_token_request(server: FakeTokenServer, make_auth):
    """httpx: a trace extension on the user's request also receives the token request's events."""
    events: list[str] = []
    with httpx.Client(auth=make_auth()) as client:
        trace = lambda name, info: events.append(name)  # noqa: E731
        client.get(server.api_url(), extensions={"trace": trace})
    assert events.count("http11.send_request_headers.started") == 2


# ---- cool-down ----------------------------------------------------------------------------------


def test_cooldown_answers_from_the_failure_and_grows(server: FakeTokenServer, make_auth):
    """After a failed fetch, callers get the failure without new requests; the pause grows."""
    clock = FakeClock()
    server.fail(Failure.status(503))
    auth = make_auth(clock=clock, max_attempts=1)
    session = requests.Session()
    session.auth = auth
    for expected, pause in enumerate((1.0, 2.0, 4.0), start=1):
        for _ in range(10):
            with pytest.raises(TokenEndpointError):
                session.get(server.api_url())
        assert server.token_requests == expected
        clock.now += pause - 0.01  # not yet
        with pytest.raises(TokenEndpointError):
            session.get(server.api_url())
        assert server.token_requests == expected
        clock.now += 0.02
    server.clear_failures()
    assert session.get(server.api_url()).status_code == 200
    assert server.token_requests == 4
    assert auth.stats.failed == 3


def test_threads_in_a_cooldown_make_no_requests(server: FakeTokenServer, make_auth):
    """16 threads hammering during the cool-down cause no token request at all."""
    clock = FakeClock()
    server.fail(Failure.status(500))
    auth = make_auth(clock=clock, max_attempts=1)
    with pytest.raises(TokenEndpointError):
        auth.get_token()
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(20):
            try:
                requests.get(server.api_url(), auth=auth, timeout=5)
            except TokenEndpointError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 320
    assert server.token_requests == 1
    assert server.api_requests == 0


@pytest.mark.anyio
async def test_tasks_in_a_cooldown_make_no_requests(server: FakeTokenServer, make_auth):
    """50 tasks during the cool-down: one token request in all, every task gets the error."""
    server.fail(Failure.status(503))
    errors: list[BaseException] = []
    async with httpx.AsyncClient(auth=make_auth(max_attempts=1)) as client:

        async def one() -> None:
            try:
                await client.get(server.api_url())
            except TokenEndpointError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
    assert len(errors) == 50
    assert server.token_requests == 1


# ---- renewal without waiting --------------------------------------------------------------------


def _in_window(server: FakeTokenServer, make_auth, **kwargs):
    """An auth whose token is held and 10 s before expiry, with a gate on its token requests."""
    clock = FakeClock()
    gate = GatedAdapter()
    token_session = requests.Session()
    token_session.mount("http://", gate)
    auth = make_auth(clock=clock, session=token_session, **kwargs)
    old = auth.get_token()
    clock.now += 3600 - 10
    return auth, gate, old, clock


def test_threads_in_the_renewal_window_never_wait(server: FakeTokenServer, make_auth):
    """8 threads in the window all return with the old token while the one renewal is held."""
    auth, gate, old, _ = _in_window(server, make_auth)
    gate.opened.clear()
    sent: list[str] = []

    def worker() -> None:
        response = requests.get(server.api_url(), auth=auth, timeout=10)
        assert response.status_code == 200
        sent.append(sent_token(response))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)  # all done, renewal still held
    assert gate.entered.is_set()
    assert sent == [old.access_token] * 8
    assert server.token_requests == 1
    gate.opened.set()
    join_renewals()
    assert server.token_requests == 2
    assert auth.stats.renewed == 1
    assert auth.get_token().access_token != old.access_token


def test_get_token_in_the_window_returns_the_current_token_at_once(
    server: FakeTokenServer, make_auth
):
    """get_token() inside the window answers with the valid token; the renewal runs behind."""
    auth, gate, old, _ = _in_window(server, make_auth)
    gate.opened.clear()
    assert auth.get_token() is old
    assert gate.entered.wait(10)
    assert auth.get_token() is old  # still renewing: no second renewal starts
    gate.opened.set()
    join_renewals()
    assert auth.get_token() is not old
    assert server.token_requests == 2


def test_failed_renewal_keeps_the_valid_token_and_logs(
    server: FakeTokenServer, make_auth, chaveiro_logs
):
    """A renewal that fails leaves callers on the valid token; the failure is logged and cools."""
    auth, _, old, clock = _in_window(server, make_auth, max_attempts=1)
    server.fail(Failure.status(503))
    session = requests.Session()
    session.auth = auth
    for _ in range(20):
        response = session.get(server.api_url())
        assert response.status_code == 200
        assert sent_token(response) == old.access_token
        join_renewals()
    assert server.token_requests == 2  # the first fetch and one failed renewal
    assert auth.stats.failed == 1
    assert any("still using token" in r.getMessage() for r in chaveiro_logs.records)
    assert all(r.levelno <= logging.WARNING for r in chaveiro_logs.records)
    server.clear_failures()
    clock.now += 1.01
    session.get(server.api_url())
    join_renewals()
    assert server.token_requests == 3
    assert auth.get_token() is not old


def test_httpx_leader_renews_while_other_threads_go_on(server: FakeTokenServer, make_auth):
    """httpx (sync): the caller that renews waits for it; every other thread goes on at once."""
    clock = FakeClock()
    gate = GatedTransport(server.oauth_token_url)
    auth = make_auth(clock=clock)
    sent: list[str] = []
    finished = threading.Semaphore(0)
    limits = httpx.Limits(max_connections=20)
    with httpx.Client(auth=auth, transport=gate, limits=limits) as client:
        old = sent_token(client.get(server.api_url()))
        clock.now += 3600 - 10
        gate.opened.clear()

        def worker() -> None:
            sent.append(sent_token(client.get(server.api_url())))
            finished.release()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        assert gate.entered.wait(10)
        for _ in range(7):
            assert finished.acquire(timeout=10)  # 7 done while the renewal is held
        assert sent == [old] * 7
        gate.opened.set()
        assert finished.acquire(timeout=10)
        for thread in threads:
            thread.join()
    assert len(set(sent)) == 2
    assert sent[-1] != old
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_async_leader_renews_while_other_tasks_go_on(server: FakeTokenServer, make_auth):
    """httpx async: one task carries the renewal; the 7 others finish with the old token first."""
    clock = FakeClock()
    gate = AsyncGatedTransport(server.oauth_token_url)
    sent: list[str] = []
    seven_done = anyio.Event()
    async with httpx.AsyncClient(auth=make_auth(clock=clock), transport=gate) as client:
        old = sent_token(await client.get(server.api_url()))
        clock.now += 3600 - 10
        gate.opened = anyio.Event()

        async def one() -> None:
            sent.append(sent_token(await client.get(server.api_url())))
            if len(sent) == 7:
                seven_done.set()

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)
            with anyio.fail_after(10):
                await gate.entered.wait()
                await seven_done.wait()
            assert sent == [old] * 7
            gate.opened.set()
    assert len(sent) == 8
    assert sent[-1] != old
    assert server.token_requests == 2


@pytest.mark.anyio
async def test_async_failed_renewal_keeps_the_valid_token(server: FakeTokenServer, make_auth):
    """httpx async: a 503 on renewal still sends the request with the valid token."""
    clock = FakeClock()
    async with httpx.AsyncClient(auth=make_auth(clock=clock, max_attempts=1)) as client:
        old = sent_token(await client.get(server.api_url()))
        clock.now += 3600 - 10
        server.fail(Failure.status(503))
        for _ in range(10):
            response = await client.get(server.api_url())
            assert response.status_code == 200
            assert sent_token(response) == old
    assert server.token_requests == 2


def test_httpx_network_error_on_renewal_fails_only_the_call_that_carried_it(
    server: FakeTokenServer, make_auth
):
    """httpx: a dropped renewal request ends the call that carried it; the rest use the token."""
    clock = FakeClock()
    with httpx.Client(auth=make_auth(clock=clock)) as client:
        old = sent_token(client.get(server.api_url()))
        clock.now += 3600 - 10
        server.fail(Failure.drop())
        with pytest.raises(TokenEndpointUnreachableError):
            client.get(server.api_url())
        for _ in range(10):  # in the cool-down: the valid token, no token request
            assert sent_token(client.get(server.api_url())) == old
    assert server.token_requests == 2


# ---- timeouts -----------------------------------------------------------------------------------


def test_hung_token_endpoint_times_out(server: FakeTokenServer, make_auth):
    """requests: a token endpoint that does not answer ends in a timeout error, not a hang."""
    server.token_delay = 3
    auth = make_auth(timeout=0.2, max_attempts=1)
    with pytest.raises(TokenEndpointUnreachableError, match="did not answer in time"):
        auth.get_token()
    assert server.token_requests == 1


def test_the_deadline_cuts_an_attempts_timeout(server: FakeTokenServer, make_auth):
    """A deadline shorter than the timeout ends a slow attempt at the deadline, with no retry."""
    server.token_delay = 3
    auth = make_auth(timeout=(10, 10), deadline=0.3)
    with pytest.raises(TokenEndpointUnreachableError):
        auth.get_token()
    assert server.token_requests == 1


def test_httpx_client_without_timeouts_is_still_bounded(server: FakeTokenServer, make_auth):
    """httpx with timeout=None: the token request is still cut at the deadline."""
    server.token_delay = 3
    auth = make_auth(deadline=0.3)
    with (
        httpx.Client(auth=auth, timeout=None) as client,
        pytest.raises(TokenEndpointUnreachableError, match="did not answer in time"),
    ):
        client.get(server.api_url())
    assert server.token_requests == 1


def test_waiters_give_up_after_wait_timeout(server: FakeTokenServer, make_auth):
    """A caller waiting for another's fetch gives up after wait_timeout; the fetch goes on."""
    gate = GatedAdapter()
    token_session = requests.Session()
    token_session.mount("http://", gate)
    auth = make_auth(session=token_session, wait_timeout=0.2)
    gate.opened.clear()
    leader_result: list[object] = []
    leader = threading.Thread(target=lambda: leader_result.append(auth.get_token()))
    leader.start()
    assert gate.entered.wait(10)
    with pytest.raises(TokenEndpointError, match="waiting for another caller"):
        auth.get_token()
    assert leader_result == []  # the waiter gave up while the fetch was still held
    gate.opened.set()
    leader.join(10)
    assert len(leader_result) == 1
    assert server.token_requests == 1


@pytest.mark.anyio
async def test_async_waiters_give_up_after_wait_timeout(server: FakeTokenServer, make_auth):
    """httpx async: a task waiting for another task's fetch gives up after wait_timeout."""
    gate = AsyncGatedTransport(server.oauth_token_url)
    gate.opened = anyio.Event()
    auth = make_auth(wait_timeout=0.2)
    async with httpx.AsyncClient(auth=auth, transport=gate) as client:
        codes: list[int] = []

        async def lead() -> None:
            codes.append((await client.get(server.api_url())).status_code)

        async with anyio.create_task_group() as group:
            group.start_soon(lead)
            await gate.entered.wait()
            with pytest.raises(TokenEndpointError, match="waiting for another caller"):
                await client.get(server.api_url())
            assert codes == []
            gate.opened.set()
    assert codes == [200]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": None},
        {"timeout": float("inf")},
        {"timeout": (1, "2")},
        {"timeout": (1, 2, 3)},
        {"wait_timeout": 0},
        {"wait_timeout": float("nan")},
    ],
)
def test_timeouts_must_be_positive_and_finite(make_auth, kwargs):
    """A token request or a wait without a bound is refused at construction."""
    with pytest.raises(ConfigurationError):
        make_auth(**kwargs)


# ---- host scoping and redirects -------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "host", "applies"),
    [
        (["api.example.com"], "api.example.com", True),
        (["api.example.com"], "API.Example.com.", True),
        (["api.example.com"], "evil-api.example.com", False),
        (["*.example.com"], "a.b.example.com", True),
        (["*.example.com"], "example.com", False),
        ([".example.com"], "x.example.com", True),
        ([".example.com"], "badexample.com", False),
        (["*.example.com"], "example.com.evil.org", False),
    ],
)
def test_only_hosts_patterns(make_auth, patterns, host, applies):
    """Exact hosts and *.suffix / .suffix patterns, for requests and httpx alike."""
    auth = make_auth(only_hosts=patterns)
    prepared = auth(requests.Request("GET", f"https://{host}/x").prepare())
    assert ("Authorization" in prepared.headers) is applies
    flow = auth.sync_auth_flow(httpx.Request("GET", f"https://{host}/x"))
    assert ("Authorization" in next(flow).headers) is applies
    flow.close()


def test_requests_redirect_to_another_host_carries_no_token(server: FakeTokenServer, make_auth):
    """requests: the other host gets no token, and its 401 causes no renewal."""
    with FakeTokenServer() as other:
        target = other.api_url()
        session = requests.Session()
        session.auth = make_auth()
        response = session.get(server.api_url(f"/api/redirect?to={target}"))
        assert response.status_code == 401
        assert "authorization" not in other.api_request_log[-1].headers
    assert server.token_requests == 1


def test_httpx_redirect_to_another_host_carries_no_token(server: FakeTokenServer, make_auth):
    """httpx, follow_redirects=True: the other host gets no token, its 401 causes no renewal."""
    with FakeTokenServer() as other:
        target = other.api_url()
        with httpx.Client(auth=make_auth(), follow_redirects=True) as client:
            response = client.get(server.api_url(f"/api/redirect?to={target}"))
            assert response.status_code == 401
            assert "authorization" not in other.api_request_log[-1].headers
            same = client.get(server.api_url(f"/api/redirect?to={server.api_url()}"))
            assert same.status_code == 200  # same origin: the token goes along
    assert server.token_requests == 1
    assert other.api_requests == 1


@pytest.mark.anyio
async def test_async_redirect_to_another_host_carries_no_token(server: FakeTokenServer, make_auth):
    """httpx async, follow_redirects=True: no token for the other host, no renewal."""
    with FakeTokenServer() as other:
        async with httpx.AsyncClient(auth=make_auth(), follow_redirects=True) as client:
            url = server.api_url(f"/api/redirect?to={other.api_url()}")
            assert (await client.get(url)).status_code == 401
        assert "authorization" not in other.api_request_log[-1].headers
    assert server.token_requests == 1


def test_redirect_from_an_allowed_host_to_another_carries_no_token(
    server: FakeTokenServer, make_auth
):
    """only_hosts + redirect: the token is attached for the allowed host only, never carried on."""
    with FakeTokenServer() as other:
        auth = make_auth(only_hosts=["127.0.0.1"])
        target = other.api_url().replace("127.0.0.1", "localhost")
        session = requests.Session()
        session.auth = auth
        assert session.get(server.api_url(f"/api/redirect?to={target}")).status_code == 401
        with httpx.Client(auth=auth, follow_redirects=True) as client:
            assert client.get(server.api_url(f"/api/redirect?to={target}")).status_code == 401
        assert all("authorization" not in r.headers for r in other.api_request_log)
        assert other.api_requests == 2


def test_unreachable_error_says_what_to_do():
    """A refused connection is a typed, retryable error that says what to check."""
    auth = ClientCredentialsAuth(
        "http://127.0.0.1:9/token", CLIENT_ID, CLIENT_SECRET, max_attempts=1
    )
    with pytest.raises(TokenEndpointUnreachableError, match="Check the URL") as info:
        auth.get_token()
    assert info.value.retryable


@pytest.mark.anyio
async def test_a_waiter_that_gives_up_leaves_the_others_waiting():
    """Tasks of one loop share one wake-up; one task's timeout does not end the others' wait."""
    flight = Flight()
    token = Token(access_token="t" * 24, expires_at=time.time() + 60, issued_at=time.time())
    results: list[bool] = []

    async def wait(timeout: float) -> None:
        results.append(await flight.wait_async(timeout))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait, 0.05)
        tasks.start_soon(wait, 30)
        tasks.start_soon(wait, 30)
        await anyio.sleep(0.2)  # the first has given up by now
        assert results == [False]
        flight.finish(token)
    assert results == [False, True, True]


def test_a_refused_auth_method_does_not_refuse_another(server: FakeTokenServer, make_auth):
    """A rejected client_secret_basic leaves client_secret_post free to try (same id and secret).

    The other way of authenticating asks the provider at once and gets its token, while the
    rejected one stays in its cool-down, without a request.
    """
    server.auth_methods_supported = ["client_secret_post"]
    basic = make_auth()
    with pytest.raises(CredentialsRejectedError):
        basic.get_token()
    post = make_auth(auth_method="client_secret_post")
    assert post.get_token().access_token in server.issued_tokens
    with pytest.raises(CredentialsRejectedError):
        basic.get_token()
    assert server.token_requests == 2
    assert post.stats.failed == 0


def test_an_empty_403_names_the_credentials_and_cools_down_like_a_rejection(
    server: FakeTokenServer, make_auth
):
    """Glewlwyd's answer to a failed client authentication: 403, empty body.

    The message names the credentials as a likely cause; the request is not retried, and
    the cool-down is that of rejected credentials (10 s, then 20 s), not an outage's 1 s.
    """
    clock = FakeClock()
    server.fail(Failure.empty(403))
    auth = make_auth(clock=clock)
    for expected, pause in enumerate((10.0, 20.0), start=1):
        with pytest.raises(TokenEndpointError) as caught:
            auth.get_token()
        assert server.token_requests == expected  # not retried
        clock.now += pause - 0.01
        with pytest.raises(TokenEndpointError):
            auth.get_token()
        assert server.token_requests == expected  # still cooling down
        clock.now += 0.02
    error = caught.value
    assert error.status_code == 403
    assert not isinstance(error, CredentialsRejectedError)  # no OAuth verdict was given
    assert "client id, the secret" in str(error)
    assert "auth_method" in str(error)
    server.clear_failures()
    assert auth.get_token().access_token in server.issued_tokens


@pytest.mark.parametrize(
    ("status", "body", "rejected"),
    [
        (400, {"error": "invalid_client"}, True),  # RFC 6749 §5.2
        (401, None, True),  # the client failed to authenticate, with or without a body
        (403, {"error": "invalid_client"}, True),  # a 403 with one of RFC 6749's codes
        (200, {"error": "invalid_client"}, True),  # a 2xx that carries an error, not a token
        (400, {"message": "bad"}, False),  # a 400 without an OAuth code
        (403, None, False),  # Glewlwyd's empty 403: no verdict, but the credentials are named
        (403, {"error": "access_denied"}, False),  # not a token endpoint error code
        (404, {"error": "invalid_client"}, False),
    ],
)
def test_what_the_readme_calls_rejected_credentials(status: int, body: object, rejected: bool):
    """CredentialsRejectedError for exactly the answers the README lists; others fail otherwise."""
    with RawServer() as raw:
        payload = b"" if body is None else json.dumps(body).encode()
        raw.answer = Answer(status, [("Content-Type", "application/json")], payload)
        auth = ClientCredentialsAuth(raw.url, CLIENT_ID, CLIENT_SECRET, max_attempts=1)
        with pytest.raises((CredentialsRejectedError, TokenEndpointError)) as caught:
            auth.get_token()
    assert isinstance(caught.value, CredentialsRejectedError) is rejected
    assert raw.requests == 1
