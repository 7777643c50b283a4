"""OpenTelemetry metrics and spans over real HTTP, read with the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chaveiro import (
    ClientCredentialsAuth,
    CredentialsRejectedError,
    FileCache,
    MemoryCache,
    RedisCache,
    TokenEndpointError,
    TokenEndpointUnreachableError,
)
from chaveiro._errors import redact
from chaveiro._slots import count, sweep
from chaveiro._telemetry import CACHE_BUCKETS, FETCH_BUCKETS, error_type
from chaveiro.testing import Failure, FakeTokenServer, reset
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock, join_renewals
from tests.test_counts import auth_steps_in_threads

FETCH = "chaveiro.token.fetch"
DURATION = "chaveiro.token.fetch.duration"
ATTEMPTS = "chaveiro.token.attempts"
REPLAYS = "chaveiro.request.replays"
REUSED = "chaveiro.token.reused"
HITS = "chaveiro.cache.hits"
CACHE_DURATION = "chaveiro.cache.operation.duration"
BASE = {"server.address": "127.0.0.1", "chaveiro.provider": "oauth2"}
GRANT = {"chaveiro.grant_type": "client_credentials"}

_DELTA = AggregationTemporality.DELTA
_READER = InMemoryMetricReader(
    # Sums and histograms per test; observable counters as observed (the Stats themselves).
    preferred_temporality={
        Counter: _DELTA,
        Histogram: _DELTA,
        ObservableCounter: AggregationTemporality.CUMULATIVE,
    }
)
_EXPORTER = InMemorySpanExporter()
_installed: list[bool] = []


def _install_sdk() -> None:
    """Install the SDK once per process: global providers cannot be replaced."""
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _installed.append(True)


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    value: float
    """A sum's value, or a histogram's count."""
    bounds: tuple[float, ...] = ()
    """A histogram's bucket boundaries."""


class Collected:
    """The metric points of one collection."""

    def __init__(self, data: MetricsData | None) -> None:
        self.data = data
        self.points: list[Point] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "chaveiro":
                    continue  # an HTTP client instrumentation's own metrics
                for metric in scope.metrics:
                    kind = type(metric.data).__name__
                    for p in metric.data.data_points:
                        bounds: tuple[float, ...] = ()
                        if isinstance(p, HistogramDataPoint):
                            value: float = p.count
                            bounds = tuple(p.explicit_bounds)
                        else:
                            assert isinstance(p, NumberDataPoint)
                            value = p.value
                        attributes = dict(p.attributes or {})
                        self.points.append(
                            Point(metric.name, metric.unit or "", kind, attributes, value, bounds)
                        )

    def of(self, name: str) -> list[Point]:
        return [p for p in self.points if p.name == name and p.value]

    def table(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, value)`` of every non-zero point of ``name``, in a stable order."""
        return sorted(((p.attributes, p.value) for p in self.of(name)), key=repr)


class Otel:
    def __init__(self) -> None:
        self.tracer = trace.get_tracer("tests")

    def collect(self) -> Collected:
        return Collected(_READER.get_metrics_data())

    def spans(self) -> list[ReadableSpan]:
        return list(_EXPORTER.get_finished_spans())

    def fetches(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == FETCH]


@pytest.fixture
def otel() -> Iterator[Otel]:
    _install_sdk()
    _READER.get_metrics_data()  # what earlier tests recorded
    _EXPORTER.clear()
    yield Otel()
    _EXPORTER.clear()
    assert trace.get_current_span() is trace.INVALID_SPAN, "a span was left attached"


def quick(auth: ClientCredentialsAuth) -> ClientCredentialsAuth:
    """Shrink the backoff between retries so tests stay fast."""
    manager = auth._manager
    manager.policy = dataclasses.replace(manager.policy, backoff=0.01, backoff_cap=0.02)
    return auth


def child_of(span: ReadableSpan, parent: ReadableSpan | trace.Span) -> bool:
    expected = parent.get_span_context() if isinstance(parent, trace.Span) else parent.context
    assert expected is not None
    return (
        span.parent is not None
        and span.parent.span_id == expected.span_id
        and span.parent.trace_id == expected.trace_id
    )


# ---- a fetch --------------------------------------------------------------------------------


def test_a_fetch_reports_one_span_one_attempt_and_one_duration(otel, server, make_auth):
    with requests.Session() as session:
        session.auth = make_auth()
        with otel.tracer.start_as_current_span("checkout") as checkout:
            for _ in range(3):
                assert session.get(server.api_url()).status_code == 200

    [span] = otel.fetches()
    assert span.kind is SpanKind.INTERNAL
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "chaveiro"
    assert child_of(span, checkout)
    assert dict(span.attributes or {}) == {**BASE, **GRANT, "chaveiro.fetch.reason": "first"}
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events

    data = otel.collect()
    fetched = {**BASE, **GRANT, "chaveiro.fetch.reason": "first"}
    assert data.table(DURATION) == [(fetched, 1)]
    assert data.table(ATTEMPTS) == [({**BASE, **GRANT, "http.response.status_code": 200}, 1)]
    assert data.table(REUSED) == [(BASE, 2)]  # the second and third requests
    assert data.table(REPLAYS) == []
    assert data.table(CACHE_DURATION) == []  # the in-process cache is not a shared one


def test_requests_that_waited_on_a_cold_start_are_counted_as_reused(otel, server, make_auth):
    """The field: 300 requests at a cold start; the reuse counter saw 100 of the 299."""
    server.token_delay = 0.3
    auth = make_auth()
    auth_steps_in_threads(auth, server.api_url(), 300)
    assert server.token_requests == 1
    data = otel.collect()
    assert data.table(REUSED) == [(BASE, 299)]
    assert data.table(DURATION) == [({**BASE, **GRANT, "chaveiro.fetch.reason": "first"}, 1)]
    assert auth.stats.reused == 299


def test_the_reuse_counter_never_goes_down_when_idle_state_goes(otel, server, make_auth):
    """A dropped auth object's expired state goes; what it counted stays counted."""
    clock, cache = FakeClock(), MemoryCache()
    auth = make_auth(clock=clock, cache=cache)
    for _ in range(3):
        auth.get_token()
    del auth
    clock.now += 3600
    sweep(cache, clock())
    assert count(cache) == 0
    assert otel.collect().table(REUSED) == [(BASE, 2)]
    make_auth(clock=clock, cache=cache).get_token()  # a new slot for the identity counts on top
    make_auth(clock=clock, cache=cache).get_token()
    assert otel.collect().table(REUSED) == [(BASE, 3)]


def test_instruments_have_their_documented_kinds_and_units(otel, server, make_auth, tmp_path):
    auth = make_auth(cache=FileCache(tmp_path), replay_on_401=True)
    with requests.Session() as session:
        session.auth = auth
        session.get(server.api_url())
        server.revoke_all()
        session.get(server.api_url())
    reset()
    auth.get_token()

    data = otel.collect()
    kinds = {(p.name, p.kind, p.unit) for p in data.points}
    assert kinds == {
        (DURATION, "Histogram", "s"),
        (ATTEMPTS, "Sum", "{attempt}"),
        (REPLAYS, "Sum", "{request}"),
        (REUSED, "Sum", "{request}"),
        (HITS, "Sum", "{hit}"),
        (CACHE_DURATION, "Histogram", "s"),
    }
    assert {p.bounds for p in data.of(DURATION)} == {FETCH_BUCKETS}
    assert {p.bounds for p in data.of(CACHE_DURATION)} == {CACHE_BUCKETS}


def test_the_token_requests_http_span_nests_under_the_fetch_with_requests(otel, server, make_auth):
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.requests")
    instrumentor = instrumentation.RequestsInstrumentor()
    instrumentor.instrument()
    try:
        with requests.Session() as session:
            session.auth = make_auth()
            with otel.tracer.start_as_current_span("checkout") as checkout:
                assert session.get(server.api_url()).status_code == 200
    finally:
        instrumentor.uninstrument()

    [fetch] = otel.fetches()
    http = [s for s in otel.spans() if s.kind is SpanKind.CLIENT]
    token_requests = [s for s in http if _url(s) == server.oauth_token_url]
    api_requests = [s for s in http if s not in token_requests]
    assert len(token_requests) == 1
    assert len(api_requests) == 1
    assert child_of(token_requests[0], fetch)
    assert child_of(fetch, checkout)
    assert child_of(api_requests[0], checkout)


def _url(span: ReadableSpan) -> object:
    """An HTTP client span's URL, by the stable conventions' name or the older one."""
    attributes = span.attributes or {}
    return attributes.get("url.full", attributes.get("http.url"))


def _httpx_instrumentor() -> Any:
    return pytest.importorskip("opentelemetry.instrumentation.httpx").HTTPXClientInstrumentor


def _token_request_spans(otel: Otel, token_url: str) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.kind is SpanKind.CLIENT and _url(s) == token_url]


def test_the_token_requests_http_span_nests_under_the_fetch_with_httpx(otel, server, make_auth):
    instrumentor = _httpx_instrumentor()
    with httpx.Client(auth=make_auth()) as client:
        instrumentor.instrument_client(client)
        with otel.tracer.start_as_current_span("checkout") as checkout:
            assert client.get(server.api_url()).status_code == 200

    [fetch] = otel.fetches()
    [token_request] = _token_request_spans(otel, server.oauth_token_url)
    assert child_of(token_request, fetch)
    assert child_of(fetch, checkout)
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached


@pytest.mark.anyio
async def test_the_token_requests_http_span_nests_under_the_fetch_with_async_httpx(
    otel, server, make_auth
):
    instrumentor = _httpx_instrumentor()
    async with httpx.AsyncClient(auth=make_auth()) as client:
        instrumentor.instrument_client(client)
        with otel.tracer.start_as_current_span("checkout") as checkout:
            assert (await client.get(server.api_url())).status_code == 200

    [fetch] = otel.fetches()
    [token_request] = _token_request_spans(otel, server.oauth_token_url)
    assert child_of(token_request, fetch)
    assert child_of(fetch, checkout)
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_the_fetch_span_is_current_while_the_token_request_is_out(otel, server, make_auth):
    """Without any instrumentation: what a user's event hook sees is our span."""
    seen: list[tuple[str, trace.Span]] = []

    def hook(request: httpx.Request) -> None:
        seen.append((request.url.path, trace.get_current_span()))

    with (
        httpx.Client(auth=make_auth(), event_hooks={"request": [hook]}) as client,
        otel.tracer.start_as_current_span("checkout") as checkout,
    ):
        client.get(server.api_url())

    [fetch] = otel.fetches()
    [(token_path, during_token), (api_path, during_api)] = seen
    assert token_path == "/oauth2/token"
    assert during_token.get_span_context().span_id == fetch.context.span_id
    assert api_path == "/api/resource"
    assert during_api is checkout


# ---- renewal --------------------------------------------------------------------------------


def test_a_background_renewal_is_linked_to_the_request_that_started_it(otel, server, make_auth):
    clock = FakeClock()
    with requests.Session() as session:
        session.auth = make_auth(clock=clock)
        session.get(server.api_url())
        clock.now += 3600 - 10  # due for renewal, still valid
        with otel.tracer.start_as_current_span("checkout") as checkout:
            assert session.get(server.api_url()).status_code == 200
        join_renewals()

    first, renewal = otel.fetches()
    assert first.attributes is not None
    assert first.attributes["chaveiro.fetch.reason"] == "first"
    assert renewal.attributes is not None
    assert renewal.attributes["chaveiro.fetch.reason"] == "renewal"
    assert renewal.parent is None  # a trace of its own: the request did not wait for it
    [link] = renewal.links
    assert link.context.span_id == checkout.get_span_context().span_id
    assert link.context.trace_id == checkout.get_span_context().trace_id
    reasons = {p.attributes["chaveiro.fetch.reason"] for p in otel.collect().of(DURATION)}
    assert reasons == {"first", "renewal"}


def test_a_renewal_in_the_request_is_its_child(otel, server, make_auth):
    clock = FakeClock()
    with httpx.Client(auth=make_auth(clock=clock)) as client:
        client.get(server.api_url())
        clock.now += 3600 - 10
        with otel.tracer.start_as_current_span("checkout") as checkout:
            client.get(server.api_url())

    _, renewal = otel.fetches()
    assert renewal.attributes is not None
    assert renewal.attributes["chaveiro.fetch.reason"] == "renewal"
    assert child_of(renewal, checkout)
    assert not renewal.links


def test_a_fetch_after_expiry_says_so(otel, server, make_auth):
    clock = FakeClock()
    auth = make_auth(clock=clock)
    auth.get_token()
    clock.now += 3600 + 60
    auth.get_token()

    reasons = [(s.attributes or {}).get("chaveiro.fetch.reason") for s in otel.fetches()]
    assert reasons == ["first", "expired"]


# ---- 401 replay ---------------------------------------------------------------------------


def test_a_401_replay_is_counted_and_its_fetch_says_refused(otel, server, make_auth):
    with requests.Session() as session:
        session.auth = make_auth()
        session.get(server.api_url())
        server.revoke_all()
        assert session.get(server.api_url()).status_code == 200

    reasons = [(s.attributes or {}).get("chaveiro.fetch.reason") for s in otel.fetches()]
    assert reasons == ["first", "refused"]
    data = otel.collect()
    assert data.table(REPLAYS) == [(BASE, 1)]
    assert data.table(ATTEMPTS) == [({**BASE, **GRANT, "http.response.status_code": 200}, 2)]


@pytest.mark.anyio
async def test_a_401_replay_is_counted_with_async_httpx(otel, server, make_auth):
    async with httpx.AsyncClient(auth=make_auth()) as client:
        await client.get(server.api_url())
        server.revoke_all()
        assert (await client.get(server.api_url())).status_code == 200

    assert otel.collect().table(REPLAYS) == [(BASE, 1)]


def test_manager_replayed_counts_in_stats_and_telemetry(otel, make_auth):
    auth = make_auth()
    token = auth.get_token()
    auth._manager.replayed(token)
    auth._manager.replayed(token)

    assert auth.stats.replayed == 2
    assert otel.collect().table(REPLAYS) == [(BASE, 2)]


# ---- failures -------------------------------------------------------------------------------


def _use(client: str, auth: ClientCredentialsAuth, server: FakeTokenServer) -> None:
    """Call the API through ``client``: a requests session or an httpx client."""
    if client == "requests":
        with requests.Session() as session:
            session.auth = auth
            session.get(server.api_url())
    else:
        with httpx.Client(auth=auth, timeout=0.2) as http:
            http.get(server.api_url())


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_rejected_credentials_end_the_span_in_error_with_the_oauth_code(
    otel, server, make_auth, client
):
    auth = make_auth(client_secret="not-the-right-secret")
    with pytest.raises(CredentialsRejectedError):
        _use(client, auth, server)

    [span] = otel.fetches()
    assert span.status.status_code is StatusCode.ERROR
    assert not span.status.description  # the message may quote the provider
    assert not span.events
    assert (span.attributes or {})["error.type"] == "invalid_client"
    data = otel.collect()
    failed = {**BASE, **GRANT, "chaveiro.fetch.reason": "first", "error.type": "invalid_client"}
    assert data.table(DURATION) == [(failed, 1)]
    rejected = {**BASE, **GRANT, "http.response.status_code": 401, "error.type": "invalid_client"}
    assert data.table(ATTEMPTS) == [(rejected, 1)]


def test_an_outage_with_retries_counts_every_attempt_and_one_fetch(otel, server, make_auth):
    server.fail(Failure.status(503), times=2)
    auth = quick(make_auth())
    auth.get_token()

    data = otel.collect()
    assert data.table(ATTEMPTS) == sorted(
        [
            ({**BASE, **GRANT, "http.response.status_code": 200}, 1),
            ({**BASE, **GRANT, "http.response.status_code": 503, "error.type": "503"}, 2),
        ],
        key=repr,
    )
    assert data.table(DURATION) == [({**BASE, **GRANT, "chaveiro.fetch.reason": "first"}, 1)]
    [span] = otel.fetches()
    assert span.status.status_code is StatusCode.UNSET


def test_an_outage_that_outlasts_the_retries_fails_the_fetch_with_the_status(
    otel, server, make_auth
):
    server.fail(Failure.status(503))
    auth = quick(make_auth(max_attempts=3))
    with pytest.raises(TokenEndpointError):
        auth.get_token()

    data = otel.collect()
    [(attributes, count)] = data.table(ATTEMPTS)
    assert (attributes["error.type"], attributes["http.response.status_code"], count) == (
        "503",
        503,
        3,
    )
    [(attributes, count)] = data.table(DURATION)
    assert (attributes["error.type"], count) == ("503", 1)
    [span] = otel.fetches()
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_token_endpoint_that_does_not_answer_in_time_is_a_timeout(
    otel, server, make_auth, client
):
    server.fail(Failure.slow(2.0))
    auth = make_auth(timeout=0.2, max_attempts=1)
    with pytest.raises(TokenEndpointUnreachableError):
        _use(client, auth, server)

    data = otel.collect()
    [(attempt, _)] = data.table(ATTEMPTS)
    assert attempt["error.type"] == "timeout"
    assert "http.response.status_code" not in attempt
    [(fetch, _)] = data.table(DURATION)
    assert fetch["error.type"] == "timeout"


@pytest.mark.anyio
async def test_a_timeout_with_async_httpx_leaves_no_span_attached(otel, server, make_auth):
    server.fail(Failure.slow(2.0))
    auth = make_auth(timeout=0.2, max_attempts=1)
    async with httpx.AsyncClient(auth=auth, timeout=0.2) as http:
        with pytest.raises(TokenEndpointUnreachableError):
            await http.get(server.api_url())
        assert trace.get_current_span() is trace.INVALID_SPAN

    [span] = otel.fetches()
    assert (span.attributes or {})["error.type"] == "timeout"
    assert span.status.status_code is StatusCode.ERROR


def test_no_answer_at_all_is_named_after_the_http_librarys_exception(otel, make_auth):
    with FakeTokenServer() as gone:
        url = gone.oauth_token_url
    auth = make_auth(token_url=url, max_attempts=1)
    with pytest.raises(TokenEndpointUnreachableError):
        auth.get_token()

    [(attempt, _)] = otel.collect().table(ATTEMPTS)
    assert attempt["error.type"] == "ConnectionError"  # requests' name for a refused connection


# ---- shared caches --------------------------------------------------------------------------


def _cache_hit(otel: Otel, auth: ClientCredentialsAuth, backend: str) -> None:
    auth.get_token()
    reset()  # forget the token in this process; the shared cache keeps it
    auth.get_token()

    assert len(otel.fetches()) == 1
    data = otel.collect()
    assert data.table(HITS) == [({**BASE, "chaveiro.cache.backend": backend}, 1)]
    timed = data.of(CACHE_DURATION)
    operations = {p.attributes["chaveiro.cache.operation"]: p.value for p in timed}
    assert operations == {"get": 3, "lock": 1, "set": 1}  # miss, lock, miss, set; then a hit
    assert {p.attributes["chaveiro.cache.backend"] for p in timed} == {backend}


def test_a_file_cache_hit_is_counted_and_its_operations_timed(otel, make_auth, tmp_path):
    _cache_hit(otel, make_auth(cache=FileCache(tmp_path)), "file")


def test_a_redis_cache_hit_is_counted_and_its_operations_timed(otel, make_auth, redis_url):
    cache = RedisCache(redis_url)
    try:
        _cache_hit(otel, make_auth(cache=cache), "redis")
    finally:
        cache.close()


# ---- cost -----------------------------------------------------------------------------------


def _calls_into_telemetry(work: Any) -> list[str]:
    """Every Python function of opentelemetry or chaveiro._telemetry that ``work()`` calls."""
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: object) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith("opentelemetry") or module == "chaveiro._telemetry":
                calls.append(f"{module}.{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def test_a_warm_token_makes_no_telemetry_call_at_all(otel, server, make_auth):
    auth = make_auth()
    auth.get_token()
    prepared = [requests.Request("GET", server.api_url()).prepare() for _ in range(50)]

    def hot() -> None:
        for request in prepared:
            auth(request)
            next(auth.sync_auth_flow(httpx.Request("GET", server.api_url())))
            auth.get_token()

    async def hot_async() -> None:
        for _ in range(50):
            flow = auth.async_auth_flow(httpx.Request("GET", server.api_url()))
            await flow.__anext__()
            await flow.aclose()

    assert _calls_into_telemetry(hot) == []
    assert _calls_into_telemetry(lambda: asyncio.run(hot_async())) == []
    assert auth.stats.reused == 200

    def fetch() -> None:  # the probe sees telemetry where there is some
        reset()
        auth.get_token()

    assert "chaveiro._telemetry.start_fetch" in _calls_into_telemetry(fetch)


def test_import_chaveiro_loads_no_opentelemetry_until_a_fetch():
    code = textwrap.dedent(
        """
        import sys
        import chaveiro
        from chaveiro.testing import FakeTokenServer

        loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        assert loaded() == [], loaded()
        with FakeTokenServer() as server:
            server.add_client("id", "secret")
            auth = chaveiro.ClientCredentialsAuth(server.oauth_token_url, "id", "secret")
            assert loaded() == [], loaded()
            auth.get_token()
        assert "opentelemetry.trace" in loaded(), loaded()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


_WITHOUT_OPENTELEMETRY = """
import sys


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Blocker())

import asyncio
import tempfile

import httpx
import requests

import chaveiro
from chaveiro import _telemetry
from chaveiro.testing import FakeTokenServer, reset

with FakeTokenServer() as server, tempfile.TemporaryDirectory() as folder:
    server.add_client("id", "secret")
    auth = chaveiro.ClientCredentialsAuth(server.oauth_token_url, "id", "secret")
    with requests.Session() as session:
        session.auth = auth
        assert session.get(server.api_url()).status_code == 200
        server.revoke_all()
        assert session.get(server.api_url()).status_code == 200  # a replay
    with httpx.Client(auth=auth) as client:
        server.revoke_all()
        assert client.get(server.api_url()).status_code == 200  # a replay

    async def main():
        async with httpx.AsyncClient(auth=auth) as client:
            server.revoke_all()
            assert (await client.get(server.api_url())).status_code == 200

    asyncio.run(main())
    stats = auth.stats
    assert (stats.fetched, stats.replayed) == (4, 3), stats
    shared = chaveiro.ClientCredentialsAuth(
        server.oauth_token_url, "id", "secret", cache=chaveiro.FileCache(folder)
    )
    shared.get_token()
    reset()
    shared.get_token()  # from the file
    wrong = chaveiro.ClientCredentialsAuth(server.oauth_token_url, "id", "wrong")
    try:
        wrong.get_token()
    except chaveiro.CredentialsRejectedError:
        pass
    else:
        raise AssertionError("wrong credentials were accepted")
    assert shared.stats.cache_hits == 1, shared.stats
assert _telemetry._get() is None
assert not [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]
print("ok")
"""


def test_everything_works_without_opentelemetry():
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENTELEMETRY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- secrets --------------------------------------------------------------------------------


def test_no_secret_token_or_client_id_in_any_span_or_metric(otel, server, make_auth, tmp_path):
    clock = FakeClock()
    with requests.Session() as session:
        session.auth = quick(make_auth(clock=clock, cache=FileCache(tmp_path)))
        session.get(server.api_url())
        server.revoke_all()
        session.get(server.api_url())
        clock.now += 3600 - 10
        session.get(server.api_url())
        join_renewals()
    server.fail(Failure.status(503), times=1)
    quick(make_auth(scope="other")).get_token()
    with pytest.raises(CredentialsRejectedError):
        make_auth(client_secret=CLIENT_SECRET + "-wrong").get_token()

    spans = otel.spans()
    assert len([s for s in spans if s.name == FETCH]) == 5
    data = otel.collect()
    assert data.data is not None
    texts = [span.to_json() for span in spans] + [data.data.to_json()]
    secrets = [CLIENT_SECRET, CLIENT_ID, *server.issued_tokens]
    for secret in secrets:
        for text in texts:
            assert secret not in text


@given(st.text(min_size=1, max_size=80))
def test_an_error_code_echoing_the_secret_never_becomes_the_error_type(secret):
    error = CredentialsRejectedError("rejected", error=secret, status_code=401)
    assert error_type(redact(error, [secret])) == "401"


@given(st.text(max_size=100))
def test_only_what_looks_like_an_oauth_error_code_is_shown(code):
    named = error_type(CredentialsRejectedError("rejected", error=code, status_code=400))
    assert named in (code, "400")
    if named == code:
        assert len(code) <= 64
        assert code == code.strip().lower()
        assert code.isascii()
        assert " " not in code


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (CredentialsRejectedError("x", error="invalid_client", status_code=401), "invalid_client"),
        (CredentialsRejectedError("x", error="Not A Code!", status_code=400), "400"),
        (CredentialsRejectedError("x"), "CredentialsRejectedError"),
        (TokenEndpointError("x", status_code=429), "429"),
        (TokenEndpointUnreachableError("x", reason="tls"), "tls"),
        (TokenEndpointUnreachableError("x"), "TokenEndpointUnreachableError"),
        (GeneratorExit(), "cancelled"),
        (ValueError("a message"), "ValueError"),
    ],
)
def test_error_type_is_short_and_stable(error: BaseException, expected: str):
    assert error_type(error) == expected
