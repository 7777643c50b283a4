"""The token manager: when to fetch, who fetches, what everyone else does meanwhile.

Every decision is written once, as a generator (:meth:`TokenManager.flow`) that
yields *steps* — send this token request, sleep, wait for another caller's
fetch, read or write the cache — and receives their results. Two small drivers,
:func:`run_sync` and :func:`run_async`, carry the steps out with blocking calls
or with ``await``; they are the only code that differs between sync and async.

Single flight: per identity there is one :class:`_Slot` in the process (per
cache). The first caller that finds the token missing or due for renewal
becomes the leader and fetches; the others wait for its :class:`Flight`, or keep
using the current token while it is still valid. The flight carries a failure
as well as a token, and a failed renewal starts a cool-down during which callers
get that failure at once instead of asking the provider again. The slot's lock
guards a few field reads and writes only; it is never held across I/O.

Retries, backoff and cool-downs are decided here too, by :class:`Policy`: a
pause is a :class:`Sleep` step like any other, so the same rules serve threads,
asyncio and trio. When a caller can renew a still-valid token in the background
(a thread of its own, say), the flow yields :class:`Detach` first: the caller
goes on at once with the current token and the rest of the flow runs elsewhere.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import anyio
import sniffio

from chaveiro import _telemetry
from chaveiro._caches import MemoryCache, TokenCache
from chaveiro._dialect import ClientSettings, Dialect, TokenRequest, build_request, parse_response
from chaveiro._errors import CredentialsRejectedError, TokenEndpointError, TokenError, redact
from chaveiro._token import Clock, Identity, Token

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

__all__ = [
    "RENEWAL_THREAD",
    "CannotRetry",
    "Detach",
    "Flight",
    "Policy",
    "RawResponse",
    "Send",
    "Stats",
    "TokenManager",
    "run_async",
    "run_sync",
    "wait_for_renewals",
]

logger = logging.getLogger("chaveiro")

MIN_ATTEMPT_TIME = 0.5
"""A retry is made only if at least this many seconds of the deadline are left for it."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A token endpoint's answer, as plain data."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Policy:
    """Timing rules for fetching; every field has a sane default."""

    leeway: float = 30.0
    attempts: int = 3
    """Tries per renewal for network errors, 5xx and 429."""
    deadline: float = 20.0
    """Upper bound, in seconds, on one renewal including its retries and pauses.

    Every attempt's timeout is cut to what is left of it."""
    wait_timeout: float | None = None
    """How long a caller waits for another caller's fetch; ``None``: ``deadline + 5``."""
    backoff: float = 0.5
    backoff_cap: float = 5.0
    cooldown: float = 1.0
    """Cool-down after the first failed renewal; doubles with each further one."""
    cooldown_cap: float = 30.0
    rejected_cooldown: float = 10.0
    """Cool-down after the provider rejected the credentials."""

    def backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than ``Retry-After``."""
        jitter = random.uniform(0, min(self.backoff_cap, self.backoff * 2.0**attempt))  # noqa: S311
        return max(jitter, retry_after or 0.0)

    def cooldown_for(self, error: TokenError, failures: int) -> float:
        """How long callers get ``error`` without a new request to the provider."""
        if isinstance(error, CredentialsRejectedError):
            base = self.rejected_cooldown
        else:
            base = self.cooldown
        delay = min(self.cooldown_cap, base * 2.0 ** max(0, failures - 1))
        if isinstance(error, TokenEndpointError) and error.retry_after is not None:
            delay = min(max(self.cooldown, error.retry_after), 300.0)
        return delay


@dataclass(slots=True)
class Stats:
    """Counters for one identity in this process (snapshot with :meth:`copy`)."""

    fetched: int = 0
    """Token requests that gave a token (first fetches and renewals)."""
    renewed: int = 0
    """Of those, the ones that replaced an earlier token."""
    reused: int = 0
    """Requests answered from a held token without asking anyone."""
    failed: int = 0
    """Renewals that failed (after retries)."""
    replayed: int = 0
    """Requests replayed after a 401."""
    cache_hits: int = 0
    """Tokens found in the cache that another auth object or process had fetched."""

    def copy(self) -> Stats:
        return copy.copy(self)


class Flight:
    """One fetch in progress; everyone who needs its result waits on it."""

    __slots__ = ("_callbacks", "_event", "_lock", "error", "token")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.token: Token | None = None
        self.error: TokenError | None = None

    def finish(self, token: Token | None = None, error: TokenError | None = None) -> None:
        """Publish the outcome (neither: the leader gave up; waiters try again)."""
        with self._lock:
            self.token, self.error = token, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """Wait without blocking the event loop (asyncio or trio)."""
        if self._event.is_set():
            return True
        if sniffio.current_async_library() == "trio":
            import trio  # noqa: PLC0415 - only under trio

            event = trio.Event()
            trio_token = trio.lowlevel.current_trio_token()

            def wake_trio() -> None:
                with contextlib.suppress(trio.RunFinishedError):  # that run is over
                    trio_token.run_sync_soon(event.set)

            self.add_done_callback(wake_trio)
            with trio.move_on_after(timeout):
                await event.wait()
            return self._event.is_set()
        import asyncio  # noqa: PLC0415 - already loaded when running under asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake_asyncio() -> None:
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:  # finished by a thread
                here = False
            if here:  # finished by a task of the same loop: no wake-up through its self-pipe
                resolve()
                return
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(resolve)

        self.add_done_callback(wake_asyncio)
        # asyncio.TimeoutError: the builtin TimeoutError only from Python 3.11 on.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(future, timeout)
        return self._event.is_set()


class _Slot:
    """Process-wide state of one identity in one cache."""

    __slots__ = (
        "failure",
        "failure_until",
        "failures",
        "flight",
        "labels",
        "lock",
        "stats",
        "succeeded",
        "token",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: Token | None = None
        self.flight: Flight | None = None
        self.failure: TokenError | None = None
        self.failure_until = 0.0
        self.failures = 0
        self.succeeded = False
        self.stats = Stats()
        self.labels: tuple[str, str, str] | None = None
        """``(server.address, provider, cache backend)`` for telemetry, once known."""


_registry_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[TokenCache, dict[str, _Slot]] = weakref.WeakKeyDictionary()


def _counts() -> list[tuple[str, str, str, int, int]]:
    """What telemetry's observable counters read: every identity's counters, labelled."""
    with _registry_lock:
        slots = [slot for slots in _registry.values() for slot in slots.values()]
    return [
        (*slot.labels, slot.stats.reused, slot.stats.cache_hits)
        for slot in slots
        if slot.labels is not None
    ]


_telemetry.use_counts(_counts)


def _backend(cache: TokenCache) -> str:
    """A short name for the kind of ``cache``: ``memory``, ``file``, ``redis``..."""
    name = type(cache).__name__.lower()
    return name.removesuffix("cache") or name


def _slot_for(cache: TokenCache, key: str) -> _Slot:
    with _registry_lock:
        slots = _registry.get(cache)
        if slots is None:
            slots = _registry[cache] = {}
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = _Slot()
        return slot


RENEWAL_THREAD = "chaveiro-renewal"
"""The name of the daemon threads that renew still-valid tokens in the background."""


def wait_for_renewals(timeout: float = 30.0) -> bool:
    """Wait for background renewals in progress; False if one is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == RENEWAL_THREAD and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True


def reset_state() -> None:
    """Forget every token, flight and cool-down held in this process (for tests).

    Background renewals finish first, so none can bring a token back afterwards.
    """
    wait_for_renewals()
    with _registry_lock:
        for slots in _registry.values():
            for slot in slots.values():
                labels = slot.labels
                slot.__init__()  # type: ignore[misc]
                slot.labels = labels


def _after_fork_in_child() -> None:
    # Locks held by other threads at fork() time would stay held forever in the
    # child, and their flights would never finish: start every slot afresh but
    # keep the tokens, which are still good.
    global _registry_lock  # noqa: PLW0603
    _registry_lock = threading.Lock()
    for slots in _registry.values():
        for slot in slots.values():
            token, stats, labels = slot.token, slot.stats, slot.labels
            slot.__init__()  # type: ignore[misc]
            slot.token, slot.stats, slot.labels = token, stats, labels


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- steps -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; give up on it after ``timeout`` seconds (what is left of the deadline).

    Reply with the :class:`RawResponse`, or throw a :class:`TokenError` in;
    throw :class:`CannotRetry` when the caller cannot send again in this call.
    """

    request: TokenRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class Detach:
    """Give ``token`` to the caller now; run the rest of this flow in the background."""

    token: Token


class CannotRetry(Exception):  # noqa: N818 - a signal into the flow, not an error for users
    """Thrown into a flow at a :class:`Send`: it failed, and this caller cannot send again.

    With httpx the token request travels through the user's client; when it
    fails without an answer the client ends the whole call. The flow records
    the failure (and starts the cool-down) instead of pausing for a retry that
    would never be sent; the next call after the cool-down tries again.
    """

    def __init__(self, error: TokenError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Wait:
    flight: Flight
    timeout: float


@dataclass(frozen=True, slots=True)
class CacheGet:
    key: str


@dataclass(frozen=True, slots=True)
class CacheSet:
    key: str
    token: Token


@dataclass(frozen=True, slots=True)
class CacheLock:
    key: str
    timeout: float


Step: TypeAlias = Send | Detach | Sleep | Wait | CacheGet | CacheSet | CacheLock
Flow: TypeAlias = Generator[Step, Any, Token]


class _Why:
    """Why a leader fetches, and where from: what telemetry says about the fetch."""

    __slots__ = ("origin", "reason")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.origin: SpanContext | None = None
        """Set when the fetch goes on in the background: the span that was current."""


def _reason(previous: Token | None, usable: Token | None, stale: str | None) -> str:
    """``first``, ``refused`` (the API refused the token), ``renewal`` or ``expired``."""
    if previous is None:
        return "first"
    if stale is not None and previous.access_token == stale:
        return "refused"
    return "renewal" if usable is not None else "expired"


def _answered(status: int, error: TokenError) -> int:
    """The HTTP status of a failed attempt's answer; 0 when there was none."""
    code = status or getattr(error, "status_code", 0)
    return code if isinstance(code, int) else 0


class TokenManager:
    """Fetches, shares and renews the token of one identity."""

    __slots__ = (
        "_labels",
        "_renew_at",
        "cache",
        "clock",
        "dialect",
        "identity",
        "policy",
        "settings",
        "slot",
        "use_refresh_token",
    )

    def __init__(
        self,
        dialect: Dialect,
        settings: ClientSettings,
        identity: Identity,
        cache: TokenCache,
        *,
        clock: Clock = time.time,
        policy: Policy | None = None,
        use_refresh_token: bool = False,
    ) -> None:
        self.dialect = dialect
        self.settings = settings
        self.identity = identity
        self.cache = cache
        self.clock = clock
        self.policy = policy or Policy()
        self.use_refresh_token = use_refresh_token
        self.slot = _slot_for(cache, identity.key)
        self._renew_at: tuple[Token | None, float] = (None, 0.0)
        self._labels: tuple[str, str, str] | None = None

    @property
    def wait_timeout(self) -> float:
        """How long a caller waits for another caller's fetch before giving up."""
        if self.policy.wait_timeout is not None:
            return self.policy.wait_timeout
        return self.policy.deadline + 5.0

    def fresh_token(self) -> Token | None:
        """The held token if it needs no renewal: the hot path, no locks, no I/O."""
        slot = self.slot
        token = slot.token
        seen, renew_at = self._renew_at
        if token is not seen:
            if token is None:
                return None
            renew_at = token.renew_at(self.policy.leeway)
            self._renew_at = (token, renew_at)  # one tuple: threads never see half of it
        if self.clock() < renew_at:
            slot.stats.reused += 1
            return token
        return None

    @property
    def labels(self) -> tuple[str, str, str]:
        """``(server.address, provider, cache backend)``: what telemetry says about us."""
        if self._labels is None:
            host = urlsplit(self.settings.token_url).hostname or ""
            self._labels = (host, self.dialect.name, _backend(self.cache))
        return self._labels

    def replayed(self, token: Token) -> None:
        """Count an API request replayed once with ``token`` after its old token was refused."""
        self.slot.stats.replayed += 1
        logger.debug("API refused the token; replaying once with token %s", token.fingerprint)
        _telemetry.replayed(*self.labels[:2])

    def flow(self, stale: str | None = None, *, background: bool = False) -> Flow:
        """Obtain a usable token; ``stale`` is an access token that an API just refused.

        With ``background``, a caller that must renew a token that is still valid
        gets :class:`Detach` first and does not wait for the renewal.
        """
        slot = self.slot
        while True:
            now = self.clock()
            with slot.lock:
                previous = held = slot.token
                if held is not None and held.access_token == stale:
                    held = None
                if held is not None and held.is_fresh(now, self.policy.leeway):
                    return held
                usable = held if held is not None and held.is_valid(now) else None
                if slot.failure is not None and now < slot.failure_until:
                    if usable is not None:
                        return usable
                    raise copy.copy(slot.failure)
                flight = slot.flight
                leader = flight is None
                if flight is None:
                    flight = slot.flight = Flight()
                    slot.labels = self.labels
            if not leader:
                if usable is not None:
                    return usable  # someone is renewing it; keep using the current one
                yield Wait(flight, self.wait_timeout)
                if flight.error is not None:
                    raise copy.copy(flight.error)
                if flight.token is not None and flight.token.access_token != stale:
                    return flight.token
                if not flight.wait(0):
                    raise TokenEndpointError(
                        f"Gave up after {self.wait_timeout:g} s waiting for another caller's"
                        f" token request to {self.settings.token_url}. The token endpoint is"
                        " too slow: check it, or raise wait_timeout.",
                        token_url=self.settings.token_url,
                    )
                continue  # the leader gave up without a result: try again
            why = _Why(_reason(previous, usable, stale))
            if background and usable is not None:
                why.origin = _telemetry.current_span_context()  # before we leave its context
                yield Detach(usable)
            return (yield from self._lead(flight, slot, previous, usable, stale, why))

    def _lead(
        self,
        flight: Flight,
        slot: _Slot,
        previous: Token | None,
        usable: Token | None,
        stale: str | None,
        why: _Why,
    ) -> Flow:
        """Fetch for everyone; ``previous`` is the token being replaced, if any."""
        try:
            token = yield from self._fetch_shared(previous, stale, why)
        except TokenError as exc:
            error = self._remember_failure(slot, exc)
            flight.finish(error=error)
            if usable is not None:
                logger.warning(
                    "token renewal failed; still using token %s until it expires: %s",
                    usable.fingerprint,
                    error,
                )
                return usable
            raise error from None
        except BaseException:
            with slot.lock:
                slot.flight = None
            flight.finish()
            raise
        with slot.lock:
            slot.token = token
            slot.flight = None
            slot.failure = None
            slot.failures = 0
            slot.succeeded = True
        flight.finish(token=token)
        return token

    def _remember_failure(self, slot: _Slot, error: TokenError) -> TokenError:
        if (
            isinstance(error, CredentialsRejectedError)
            and slot.succeeded
            and error.error in ("invalid_client", "")
            and self.dialect.rejected_after_success_hint
        ):
            error = CredentialsRejectedError(
                f"{error} {self.dialect.rejected_after_success_hint}",
                token_url=error.token_url,
                error=error.error,
                error_description=error.error_description,
                error_uri=error.error_uri,
                status_code=error.status_code,
            )
        with slot.lock:
            slot.failures += 1
            slot.stats.failed += 1
            pause = self.policy.cooldown_for(error, slot.failures)
            slot.failure = error
            slot.failure_until = self.clock() + pause
            slot.flight = None
        logger.warning(
            "token request to %s failed (%d in a row); not asking again for %.1f s: %s",
            self.settings.token_url,
            slot.failures,
            pause,
            error,
        )
        return error

    def _fetch_shared(self, previous: Token | None, stale: str | None, why: _Why) -> Flow:
        """Leader only: look in the cache, under its lock, before asking the provider.

        The driver holds the cache lock from ``CacheLock`` until ``CacheSet`` or the
        end of the flow, whichever comes first, and releases it on any error.
        """
        key = self.identity.key
        cached = yield CacheGet(key)
        if self._adoptable(cached, stale):
            assert isinstance(cached, Token)
            return cached
        yield CacheLock(key, self.wait_timeout)
        cached = yield CacheGet(key)
        if self._adoptable(cached, stale):
            assert isinstance(cached, Token)
            return cached
        token = yield from self._request(previous, why)
        yield CacheSet(key, token)
        return token

    def _adoptable(self, cached: object, stale: str | None) -> bool:
        if not isinstance(cached, Token) or cached.access_token == stale:
            return False
        if not cached.is_fresh(self.clock(), self.policy.leeway):
            return False
        self.slot.stats.cache_hits += 1
        logger.debug("token %s found in the cache", cached.fingerprint)
        return True

    def _request(self, previous: Token | None, why: _Why) -> Flow:
        """Ask the provider, timed and traced as one fetch."""
        refresh = None
        if (
            self.use_refresh_token
            and previous is not None
            and previous.refresh_usable(self.clock())
        ):
            refresh = previous.refresh_token
        host, provider, _ = self.labels
        grant = self._grant(refresh)
        fetch = _telemetry.start_fetch(host, provider, grant, why.reason, why.origin)
        try:
            token = yield from self._attempts(previous, refresh, fetch)
        except BaseException as exc:
            fetch.end(exc)
            raise
        fetch.end(None)
        return token

    def _attempts(
        self, previous: Token | None, refresh: str | None, fetch: _telemetry.AnyFetch
    ) -> Flow:
        """Send token requests, with bounded retries for transient failures."""
        policy, settings = self.policy, self.settings
        started = self.clock()
        attempt = 0
        while True:
            now = self.clock()
            request = build_request(self.dialect, settings, now, refresh_token=refresh)
            left = policy.deadline - (now - started)
            grant = self._grant(refresh)
            status = 0
            try:
                with fetch.sending():
                    raw: RawResponse = yield Send(request, max(left, 0.05))
                status = raw.status
                raw = self._scrubbed(raw, refresh)
                token = parse_response(
                    self.dialect,
                    settings.token_url,
                    raw.status,
                    raw.headers,
                    raw.body,
                    now,  # lifetimes count from when the request left: conservative
                )
            except CannotRetry as exc:
                error = self._redacted(exc.error, refresh)
                fetch.attempt(grant, _answered(status, error), error)
                raise error from None
            except TokenError as exc:
                error = self._redacted(exc, refresh)
                fetch.attempt(grant, _answered(status, error), error)
                if isinstance(error, CredentialsRejectedError) and refresh is not None:
                    logger.info("refresh token refused (%s); using client credentials", error.error)
                    refresh = None
                    continue
                if not isinstance(error, TokenEndpointError) or not error.retryable:
                    raise
                attempt += 1
                delay = policy.backoff_delay(attempt - 1, error.retry_after)
                spent = self.clock() - started
                if attempt >= policy.attempts or spent + delay + MIN_ATTEMPT_TIME > policy.deadline:
                    raise
                logger.info(
                    "token request to %s failed (%s); retry %d in %.2f s",
                    settings.token_url,
                    error.status_code or "no answer",
                    attempt,
                    delay,
                )
                yield Sleep(delay)
                continue
            fetch.attempt(grant, status, None)
            self._log_fetch(token, previous, refreshed=refresh is not None)
            return token

    def _grant(self, refresh: str | None) -> str | None:
        """The ``grant_type`` a token request sends (``None``: the dialect sends none)."""
        return "refresh_token" if refresh is not None else self.dialect.grant_type

    def _scrubbed(self, raw: RawResponse, refresh: str | None) -> RawResponse:
        """``raw`` with the secrets we sent cut out, before any excerpt can cut one in half."""
        secrets = [s.encode() for s in (self.settings.client_secret, refresh) if s]
        texts = [raw.body, *(v.encode("utf-8", "replace") for v in raw.headers.values())]
        if not any(secret in text for secret in secrets for text in texts):
            return raw
        # A placeholder in the token alphabet: a token around it still reads as one
        # token, and the excerpt hides it whole.
        body, headers = raw.body, dict(raw.headers)
        for secret in secrets:
            body = body.replace(secret, b"REDACTED")
            text = secret.decode()
            headers = {k: v.replace(text, "REDACTED") for k, v in headers.items()}
        return RawResponse(raw.status, headers, body)

    def _redacted(self, error: TokenError, refresh: str | None) -> TokenError:
        """``error`` without the secrets we sent, should the provider have echoed them."""
        return redact(error, (self.settings.client_secret or "", refresh or ""))

    def _log_fetch(self, token: Token, held: Token | None, *, refreshed: bool) -> None:
        stats = self.slot.stats
        stats.fetched += 1
        if held is not None:
            stats.renewed += 1
        logger.debug(
            "%s token %s from %s (expires in %.0f s)",
            "renewed" if held is not None else "fetched",
            token.fingerprint,
            self.settings.token_url,
            token.expires_at - token.issued_at,
            extra={"chaveiro_event": "renewed" if held else "fetched", "refresh_grant": refreshed},
        )


# ---- drivers -----------------------------------------------------------------------------


def _cache_failed(step: Step, exc: Exception) -> None:
    logger.warning(
        "token cache failed during %s (%s: %s); going on without it",
        type(step).__name__,
        type(exc).__name__,
        exc,
    )


_OPERATIONS = {CacheGet: "get", CacheSet: "set", CacheLock: "lock"}


def _cache_step(cache: TokenCache, step: Step, held_locks: ExitStack) -> Any:
    started = time.perf_counter()
    error: Exception | None = None
    try:
        if isinstance(step, CacheGet):
            return cache.get(step.key)
        if isinstance(step, CacheSet):
            cache.set(step.key, step.token)
            held_locks.close()
            return None
        assert isinstance(step, CacheLock)
        return held_locks.enter_context(cache.lock(step.key, step.timeout))
    except Exception as exc:  # noqa: BLE001 - a cache failure never fails a request
        error = exc
        _cache_failed(step, exc)
        return None
    finally:
        _timed(cache, step, started, error)


async def _acache_step(cache: TokenCache, step: Step, held_locks: AsyncExitStack) -> Any:
    started = time.perf_counter()
    error: Exception | None = None
    try:
        if isinstance(step, CacheGet):
            return await cache.aget(step.key)
        if isinstance(step, CacheSet):
            await cache.aset(step.key, step.token)
            await held_locks.aclose()
            return None
        assert isinstance(step, CacheLock)
        return await held_locks.enter_async_context(cache.alock(step.key, step.timeout))
    except Exception as exc:  # noqa: BLE001 - a cache failure never fails a request
        error = exc
        _cache_failed(step, exc)
        return None
    finally:
        _timed(cache, step, started, error)


def _timed(cache: TokenCache, step: Step, started: float, error: Exception | None) -> None:
    """Report a shared cache's operation to telemetry; the in-process cache is not reported."""
    if not isinstance(cache, MemoryCache):
        _telemetry.cache_operation(_backend(cache), _OPERATIONS[type(step)], started, error)


def run_sync(flow: Flow, cache: TokenCache) -> Generator[Send | Detach | Token, Any, None]:
    """Carry out a flow's steps with blocking calls; sends are yielded to the caller.

    The last item yielded is the token. Exceptions thrown in at a yielded
    :class:`Send` go to the flow, which decides what they mean. A :class:`Detach`
    is yielded too: the caller takes its token and carries on driving this
    generator elsewhere (another thread), or at once if it cannot.
    """
    with ExitStack() as held_locks:
        try:
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(reply)
                except StopIteration as stop:
                    held_locks.close()
                    yield stop.value
                    return
                reply, error = None, None
                if isinstance(step, Send | Detach):
                    try:
                        reply = yield step
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Wait):
                    step.flight.wait(step.timeout)
                elif isinstance(step, Sleep):
                    time.sleep(step.seconds)
                else:
                    reply = _cache_step(cache, step, held_locks)
        finally:
            flow.close()


async def run_async(flow: Flow, cache: TokenCache) -> AsyncGenerator[Send | Detach | Token, Any]:
    """The same as :func:`run_sync`, awaiting instead of blocking (asyncio or trio)."""
    async with AsyncExitStack() as held_locks:
        try:
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(reply)
                except StopIteration as stop:
                    await held_locks.aclose()
                    yield stop.value
                    return
                reply, error = None, None
                if isinstance(step, Send | Detach):
                    try:
                        reply = yield step
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Wait):
                    await step.flight.wait_async(step.timeout)
                elif isinstance(step, Sleep):
                    await anyio.sleep(step.seconds)
                else:
                    reply = await _acache_step(cache, step, held_locks)
        finally:
            flow.close()
