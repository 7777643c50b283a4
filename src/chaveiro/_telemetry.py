"""OpenTelemetry metrics and spans for token fetches, through ``opentelemetry-api`` only.

Meter and tracer ``chaveiro`` (version: the package's)::

    chaveiro.token.fetch.duration     histogram, s          one point per fetch from the provider
    chaveiro.token.attempts           counter, {attempt}    each request sent to the token endpoint
    chaveiro.request.replays          counter, {request}    API requests replayed after a 401
    chaveiro.token.reused             observable counter    requests answered from a held token
    chaveiro.cache.hits               observable counter    tokens found in the cache
    chaveiro.cache.operation.duration histogram, s          shared-cache get, set and lock
    span chaveiro.token.fetch         INTERNAL              around each fetch from the provider

Nothing here runs on the hot path: a warm token costs no instrument call, and the
two observable counters read :class:`~chaveiro.Stats` when the SDK collects.
``opentelemetry`` is imported at the first fetch or cache lookup, and only if it
is installed; without it every function here returns at once. The application
chooses the SDK and the exporters; chaveiro only talks to the API.

Attributes never hold a client id, a secret or a token: only the token endpoint's
host, the provider's dialect name, the grant type, why the fetch happened, and
on failure a short stable ``error.type``.
"""

from __future__ import annotations

# Every opentelemetry import is inside a function: none may run at ``import chaveiro``.
# ruff: noqa: PLC0415
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, TypeAlias

from chaveiro._errors import (
    CredentialsRejectedError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span, SpanContext

__all__ = [
    "CACHE_BACKEND",
    "CACHE_OPERATION",
    "ERROR_TYPE",
    "FETCH_REASON",
    "GRANT_TYPE",
    "NO_FETCH",
    "PROVIDER",
    "SERVER_ADDRESS",
    "STATUS_CODE",
    "AnyFetch",
    "Counts",
    "Fetch",
    "cache_operation",
    "current_span_context",
    "error_type",
    "replayed",
    "start_fetch",
    "use_counts",
]

SERVER_ADDRESS = "server.address"
PROVIDER = "chaveiro.provider"
GRANT_TYPE = "chaveiro.grant_type"
FETCH_REASON = "chaveiro.fetch.reason"
STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
CACHE_BACKEND = "chaveiro.cache.backend"
CACHE_OPERATION = "chaveiro.cache.operation"

FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
"""Seconds; a fetch is bounded by the policy's deadline (20 s by default)."""
CACHE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

Counts = Callable[[], Iterable[tuple[str, str, str, int, int]]]
"""``(server.address, provider, cache backend, reused, cache hits)`` per identity."""

_ERROR_CODE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}")
"""What an OAuth error code looks like (``invalid_client``); anything else is not shown."""


def error_type(exc: BaseException) -> str:
    """A short, stable, secret-free name for why a fetch or an attempt failed.

    The OAuth error code when the provider gave one, ``timeout`` or ``tls`` when
    there was no answer for that reason, the HTTP status of a failing answer,
    ``cancelled`` when the caller went away, else the exception's class name.
    """
    if isinstance(exc, CredentialsRejectedError):
        if _ERROR_CODE.fullmatch(exc.error):
            return exc.error
        return str(exc.status_code) if exc.status_code else type(exc).__name__
    if isinstance(exc, TokenEndpointUnreachableError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, TokenEndpointError) and exc.status_code:
        return str(exc.status_code)
    if isinstance(exc, GeneratorExit) or type(exc).__name__ in ("CancelledError", "Cancelled"):
        return "cancelled"
    return type(exc).__name__


class Fetch:
    """One fetch from the provider: its span, its attempts, its duration."""

    __slots__ = ("_api", "attributes", "span", "started")

    def __init__(self, api: _Api, attributes: dict[str, str], origin: SpanContext | None) -> None:
        self._api = api
        self.attributes = attributes
        self.started = time.perf_counter()
        from opentelemetry import trace
        from opentelemetry.context import Context

        if origin is None:
            self.span: Span = api.tracer.start_span(
                "chaveiro.token.fetch", kind=trace.SpanKind.INTERNAL, attributes=attributes
            )
        else:  # renewing in the background: a trace of its own, linked to its cause
            self.span = api.tracer.start_span(
                "chaveiro.token.fetch",
                context=Context(),
                kind=trace.SpanKind.INTERNAL,
                attributes=attributes,
                links=[trace.Link(origin)] if origin.is_valid else None,
            )

    def sending(self) -> AbstractContextManager[None]:
        """Make the span current while the token request is out.

        The application's HTTP client instrumentation then nests the request's
        own span under ours, whoever sends it. A flow is a generator: this is
        entered before it yields a send and left when it resumes, in the same
        thread or task. Should it be closed from elsewhere (a garbage-collected
        async generator, say), the span is no longer current there and nothing
        is detached.
        """
        return _current(self.span)

    def attempt(self, grant: str | None, status: int | None, error: BaseException | None) -> None:
        """Count one request sent to the token endpoint."""
        attributes: dict[str, str | int] = {
            SERVER_ADDRESS: self.attributes[SERVER_ADDRESS],
            PROVIDER: self.attributes[PROVIDER],
        }
        if grant:
            attributes[GRANT_TYPE] = grant
        if status:
            attributes[STATUS_CODE] = status
        if error is not None:
            attributes[ERROR_TYPE] = error_type(error)
        self._api.attempts.add(1, attributes)

    def end(self, error: BaseException | None) -> None:
        """Record the fetch's duration and end its span."""
        attributes = dict(self.attributes)
        if error is not None:
            kind = error_type(error)
            attributes[ERROR_TYPE] = kind
            self.span.set_attribute(ERROR_TYPE, kind)
            # No description: the message may quote the provider's own words.
            from opentelemetry.trace import StatusCode

            self.span.set_status(StatusCode.ERROR)
        self._api.fetch_duration.record(time.perf_counter() - self.started, attributes)
        self.span.end()


class _NoFetch:
    """A fetch without opentelemetry: every method does nothing."""

    __slots__ = ()

    def sending(self) -> AbstractContextManager[None]:
        return nullcontext()

    def attempt(self, grant: str | None, status: int | None, error: BaseException | None) -> None:
        pass

    def end(self, error: BaseException | None) -> None:
        pass


NO_FETCH = _NoFetch()
AnyFetch: TypeAlias = Fetch | _NoFetch


@contextmanager
def _current(span: Span) -> Iterator[None]:
    from opentelemetry import context as otel_context
    from opentelemetry.trace import set_span_in_context

    context = set_span_in_context(span)
    token = otel_context.attach(context)
    try:
        yield
    finally:
        if otel_context.get_current() is context:  # else: resumed elsewhere; not ours to undo
            otel_context.detach(token)


class _Api:
    """The instruments, made once from the global meter and tracer providers.

    Made through the API's proxies, they report to whichever SDK the
    application installs, even one installed after the first fetch.
    """

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        version = _version()
        self.tracer = trace.get_tracer("chaveiro", version)
        meter = metrics.get_meter("chaveiro", version)
        self.fetch_duration = meter.create_histogram(
            "chaveiro.token.fetch.duration",
            unit="s",
            description="Duration of token fetches from the provider, retries and pauses included.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        self.attempts = meter.create_counter(
            "chaveiro.token.attempts",
            unit="{attempt}",
            description="HTTP requests sent to the token endpoint.",
        )
        self.replays = meter.create_counter(
            "chaveiro.request.replays",
            unit="{request}",
            description="API requests replayed once with a new token after a 401.",
        )
        self.cache_duration = meter.create_histogram(
            "chaveiro.cache.operation.duration",
            unit="s",
            description="Duration of shared token cache operations.",
            explicit_bucket_boundaries_advisory=CACHE_BUCKETS,
        )
        meter.create_observable_counter(
            "chaveiro.token.reused",
            callbacks=[self._observe_reused],
            unit="{request}",
            description="Requests answered from a held token without asking the provider.",
        )
        meter.create_observable_counter(
            "chaveiro.cache.hits",
            callbacks=[self._observe_cache_hits],
            unit="{hit}",
            description="Tokens found in the cache that another auth object or process fetched.",
        )

    def _observe_reused(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str], int] = {}
        for host, provider, _backend, reused, _hits in _counts():
            totals[host, provider] = totals.get((host, provider), 0) + reused
        return [self._observation(n, host, provider) for (host, provider), n in totals.items()]

    def _observe_cache_hits(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str, str], int] = {}
        for host, provider, backend, _reused, hits in _counts():
            key = (host, provider, backend)
            totals[key] = totals.get(key, 0) + hits
        return [self._observation(n, *key) for key, n in totals.items()]

    @staticmethod
    def _observation(value: int, host: str, provider: str, backend: str = "") -> Observation:
        from opentelemetry.metrics import Observation

        attributes = {SERVER_ADDRESS: host, PROVIDER: provider}
        if backend:
            attributes[CACHE_BACKEND] = backend
        return Observation(value, attributes)


def _version() -> str:
    from chaveiro._version import __version__

    return __version__


_lock = threading.Lock()
_api: _Api | None = None
_tried = False


def _no_counts() -> Iterable[tuple[str, str, str, int, int]]:
    return ()


_counts: Counts = _no_counts


def use_counts(counts: Counts) -> None:
    """Where the observable counters read their numbers (the token manager's slots)."""
    global _counts  # noqa: PLW0603
    _counts = counts


def _get() -> _Api | None:
    """The instruments, or ``None`` when opentelemetry-api is not installed."""
    global _api, _tried  # noqa: PLW0603
    if _tried:
        return _api
    with _lock:
        if not _tried:
            try:
                _api = _Api()
            except ImportError:
                _api = None
            _tried = True
    return _api


def start_fetch(
    host: str,
    provider: str,
    grant: str | None,
    reason: str,
    origin: SpanContext | None = None,
) -> AnyFetch:
    """Start timing a fetch and its span.

    ``origin`` is given for a renewal in the background: the span current where
    it was decided (maybe none). The fetch then starts a trace of its own, linked
    to that span; otherwise its span is a child of the current one.
    """
    api = _get()
    if api is None:
        return NO_FETCH
    attributes = {SERVER_ADDRESS: host, PROVIDER: provider, FETCH_REASON: reason}
    if grant:
        attributes[GRANT_TYPE] = grant
    return Fetch(api, attributes, origin)


def current_span_context() -> SpanContext | None:
    """The span context current in the caller, for a renewal that goes on elsewhere."""
    api = _get()
    if api is None:
        return None
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


def replayed(host: str, provider: str) -> None:
    """Count an API request replayed after a 401."""
    api = _get()
    if api is not None:
        api.replays.add(1, {SERVER_ADDRESS: host, PROVIDER: provider})


def cache_operation(
    backend: str, operation: str, started: float, error: BaseException | None
) -> None:
    """Record one shared-cache operation that began at ``started`` (``time.perf_counter()``)."""
    api = _get()
    if api is None:
        return
    attributes = {CACHE_BACKEND: backend, CACHE_OPERATION: operation}
    if error is not None:
        attributes[ERROR_TYPE] = error_type(error)
    api.cache_duration.record(time.perf_counter() - started, attributes)
