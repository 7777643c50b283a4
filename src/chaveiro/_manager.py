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
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chaveiro import _telemetry
from chaveiro._caches import TokenCache
from chaveiro._dialect import ClientSettings, Dialect
from chaveiro._errors import CredentialsRejectedError, TokenEndpointError, TokenError
from chaveiro._fetch import Fetching
from chaveiro._flight import RENEWAL_THREAD, Flight, Stats, backend_name, wait_for_renewals
from chaveiro._policy import Policy
from chaveiro._slots import Hold, Slot, hold, reset_state, sweep
from chaveiro._steps import (
    CacheGet,
    CacheLock,
    CacheSet,
    CannotRetry,
    Detach,
    Flow,
    RawResponse,
    Send,
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


class TokenManager(Fetching):
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
        token = yield from self._request(previous, why.reason, why.origin)
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
