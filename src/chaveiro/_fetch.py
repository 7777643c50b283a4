"""One fetch of a token: the token requests it sends, retried within its deadline.

:class:`Fetching` is the part of :class:`~chaveiro._manager.TokenManager` that
talks to the token endpoint, once the manager has decided that this caller
fetches: it builds each token request when it is final (a supplied client
assertion asked for, a DPoP proof signed last), yields it as a :class:`Send`
step, parses the answer, and retries transient failures with backoff, a
refused refresh token with the client credentials, and a DPoP nonce demand once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from chaveiro import _telemetry
from chaveiro._assertions import obtain
from chaveiro._dialect import ClientSettings, Dialect, TokenRequest, build_request, parse_response
from chaveiro._errors import CredentialsRejectedError, TokenEndpointError, TokenError, redact
from chaveiro._policy import Policy
from chaveiro._steps import Call, CannotRetry, Flow, RawResponse, Send, Sleep, Step
from chaveiro._token import Clock, Token

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from chaveiro._slots import Slot

__all__ = ["MIN_ATTEMPT_TIME", "Fetching"]

logger = logging.getLogger("chaveiro")

MIN_ATTEMPT_TIME = 0.5
"""A retry is made only if at least this many seconds of the deadline are left for it."""


def _answered(status: int, error: TokenError) -> int:
    """The HTTP status of a failed attempt's answer; 0 when there was none."""
    code = status or getattr(error, "status_code", 0)
    return code if isinstance(code, int) else 0


class Fetching:
    """Sends the token requests of one fetch; mixed into the token manager, which holds state."""

    __slots__ = ()

    dialect: Dialect
    settings: ClientSettings
    policy: Policy
    clock: Clock
    slot: Slot
    use_refresh_token: bool

    @property
    def labels(self) -> tuple[str, str, str]:
        """The manager's telemetry labels."""
        raise NotImplementedError

    @property
    def token_types(self) -> tuple[str, ...]:
        """The manager's accepted token types."""
        raise NotImplementedError

    def _request(self, previous: Token | None, reason: str, origin: SpanContext | None) -> Flow:
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
        fetch = _telemetry.start_fetch(host, provider, grant, reason, origin)
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
