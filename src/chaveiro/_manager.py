"""The token manager: when to fetch, who fetches, what everyone else does meanwhile.

Every decision is written once, as a generator (:meth:`TokenManager.flow`) that
yields *steps* (:mod:`chaveiro._steps`) — send this token request, sleep, wait
for another caller's fetch, read or write the cache — and receives their
results; two small drivers carry the steps out, blocking or awaiting.

Single flight (:mod:`chaveiro._flight`, :mod:`chaveiro._slots`): the first caller
that finds the token missing or due for renewal becomes the leader and fetches;
the others wait for its :class:`Flight`, or keep using the current token while it
is still valid.
The flight carries a failure as well as a token, and a failed renewal starts a
cool-down during which callers get that failure at once instead of asking the
provider again. The slot's lock guards a few field reads and writes only; it is
never held across I/O.

Retries, backoff and cool-downs are decided here too, by :class:`Policy`: a
pause is a :class:`Sleep` step like any other, so the same rules serve threads,
asyncio and trio. When a caller can renew a still-valid token in the background
(a thread of its own, say), the flow yields :class:`Detach` first: the caller
goes on at once with the current token and the rest of the flow runs elsewhere.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chaveiro import _telemetry
from chaveiro._assertions import obtain
from chaveiro._caches import TokenCache
from chaveiro._dialect import ClientSettings, Dialect, TokenRequest, build_request, parse_response
from chaveiro._errors import CredentialsRejectedError, TokenEndpointError, TokenError, redact
from chaveiro._flight import RENEWAL_THREAD, Flight, Stats, backend_name, wait_for_renewals
from chaveiro._policy import Policy
from chaveiro._slots import Hold, Slot, hold, reset_state, sweep
from chaveiro._steps import (
    CacheGet,
    CacheLock,
    CacheSet,
    Call,
    CannotRetry,
    Detach,
    Flow,
    RawResponse,
    Send,
    Sleep,
    Step,
    Wait,
    run_async,
    run_sync,
)
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
    "reset_state",
    "run_async",
    "run_sync",
    "wait_for_renewals",
]

logger = logging.getLogger("chaveiro")

MIN_ATTEMPT_TIME = 0.5
"""A retry is made only if at least this many seconds of the deadline are left for it."""


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
        "_hold",
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
        self._hold: Hold | None = hold(cache, identity.key, clock())
        self.slot = self._hold.slot
        self._renew_at: tuple[Token | None, float] = (None, 0.0)
        self._labels: tuple[str, str, str] | None = None

    @property
    def token_types(self) -> tuple[str, ...]:
        """The token types this identity uses: ``Bearer``, or ``DPoP`` (RFC 9449)."""
        dpop = self.settings.dpop
        return ("Bearer",) if dpop is None else dpop.token_types

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

    def release(self) -> None:
        """Let go of the identity's slot: it goes once idle, unless another manager holds it.

        The token in hand keeps serving the warm path; the next flow holds the slot again.
        """
        self._hold = None

    def _held_slot(self, now: float) -> Slot:
        """The slot, held again after :meth:`release`; a few idle slots go meanwhile."""
        if self._hold is None:
            self._hold = hold(self.cache, self.identity.key, now)
            self.slot = self._hold.slot
        else:
            sweep(self.cache, now)
        return self.slot

    @property
    def labels(self) -> tuple[str, str, str]:
        """``(server.address, provider, cache backend)``: what telemetry says about us."""
        if self._labels is None:
            host = urlsplit(self.settings.token_url).hostname or ""
            self._labels = (host, self.dialect.name, backend_name(self.cache))
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
        slot = self._held_slot(self.clock())
        while True:
            now = self.clock()
            with slot.lock:
                previous = held = slot.token
                if held is not None and held.access_token == stale:
                    held = None
                if held is not None and held.is_fresh(now, self.policy.leeway):
                    slot.stats.reused += 1
                    return held
                usable = held if held is not None and held.is_valid(now) else None
                if slot.failure is not None and now < slot.failure_until:
                    if usable is not None:
                        slot.stats.reused += 1
                        return usable
                    raise copy.copy(slot.failure)
                flight = slot.flight
                leader = flight is None
                if flight is None:
                    flight = slot.flight = Flight()
                    slot.labels = self.labels
            if not leader:
                if usable is not None:  # someone is renewing it; keep using the current one
                    slot.reused()
                    return usable
                yield Wait(flight, self.wait_timeout)
                if flight.error is not None:
                    raise copy.copy(flight.error)
                if flight.token is not None and flight.token.access_token != stale:
                    slot.reused(waited=True)
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
        slot: Slot,
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
                slot.reused()
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

    def _remember_failure(self, slot: Slot, error: TokenError) -> TokenError:
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
            extra={"chaveiro_event": "failed"},
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
        if cached.token_type not in self.token_types:
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
        dpop, token_types = settings.dpop, self.token_types
        started = self.clock()
        attempt = 0
        nonce_retried = False
        while True:
            request, sent, now = yield from self._prepared(refresh)
            left = policy.deadline - (now - started)
            grant = self._grant(refresh)
            status = 0
            offered: str | None = None
            try:
                with fetch.sending():
                    raw: RawResponse = yield Send(request, max(left, 0.05))
                status = raw.status
                if dpop is not None:  # RFC 9449 §8.2: any answer may carry the next nonce
                    offered = dpop.heard(request.url, raw.headers)
                token = parse_response(
                    self.dialect,
                    settings.token_url,
                    raw.status,
                    raw.headers,
                    raw.body,
                    now,  # lifetimes count from when the request left: conservative
                    secrets=tuple(s for s in sent if s),
                    token_types=token_types,
                )
            except CannotRetry as exc:
                error = self._redacted(exc.error, sent)
                fetch.attempt(grant, _answered(status, error), error)
                raise error from None
            except TokenError as exc:
                error = self._redacted(exc, sent)
                fetch.attempt(grant, _answered(status, error), error)
                nonce_retried = self._nonce_retry(error, request, offered, nonce_retried)
                if nonce_retried:
                    continue
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

    def _prepared(
        self, refresh: str | None
    ) -> Generator[Step, Any, tuple[TokenRequest, tuple[str | None, ...], float]]:
        """The next token request, final; the secrets it carries; when it was made.

        A supplied client assertion is asked for once per token request, retries
        included; the DPoP proof is made last, with the newest nonce.
        """
        settings = self.settings
        source = settings.assertions.source
        assertion = None
        if source is not None:
            assertion = yield Call(functools.partial(obtain, source, settings.token_url))
        now = self.clock()
        request = build_request(
            self.dialect, settings, now, refresh_token=refresh, client_assertion=assertion
        )
        if settings.dpop is not None:
            request = settings.dpop.signed(request, now)
        return request, (settings.client_secret, refresh, assertion), now

    def _nonce_retry(
        self, error: TokenError, request: TokenRequest, offered: str | None, retried: bool
    ) -> bool:
        """RFC 9449 §8: ``use_dpop_nonce`` is answered by one retry with the nonce it gave.

        Never twice in a row: a server that keeps asking for new nonces gets its error.
        """
        dpop = self.settings.dpop
        if dpop is None or retried or not dpop.token_retry(error, request, offered):
            return False
        self.slot.stats.nonce_retries += 1
        logger.info("%s asked for a DPoP nonce; retrying once with it", self.settings.token_url)
        return True

    def _grant(self, refresh: str | None) -> str | None:
        """The ``grant_type`` a token request sends (``None``: the dialect sends none)."""
        return "refresh_token" if refresh is not None else self.dialect.grant_type

    def _redacted(self, error: TokenError, sent: tuple[str | None, ...]) -> TokenError:
        """``error`` without the secrets we sent, should the provider have echoed them."""
        return redact(error, [s for s in sent if s])

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
