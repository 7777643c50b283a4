"""Timing rules for fetching: backoff between attempts, and the cool-down after a failure."""

from __future__ import annotations

import random
from dataclasses import dataclass

from chaveiro._errors import CredentialsRejectedError, TokenEndpointError, TokenError

__all__ = ["Policy"]


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
    """Cool-down after the provider rejected the credentials, or forbade the client (403)."""

    def backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than ``Retry-After``."""
        jitter = random.uniform(0, min(self.backoff_cap, self.backoff * 2.0**attempt))  # noqa: S311
        return max(jitter, retry_after or 0.0)

    def cooldown_for(self, error: TokenError, failures: int) -> float:
        """How long callers get ``error`` without a new request to the provider."""
        if isinstance(error, CredentialsRejectedError) or _forbidden(error):
            base = self.rejected_cooldown
        else:
            base = self.cooldown
        delay = min(self.cooldown_cap, base * 2.0 ** max(0, failures - 1))
        if isinstance(error, TokenEndpointError) and error.retry_after is not None:
            delay = min(max(self.cooldown, error.retry_after), 300.0)
        return delay


def _forbidden(error: TokenError) -> bool:
    """A 403 that is no OAuth error: the server refuses this client, and will until told otherwise.

    Glewlwyd answers every failed client authentication so, with an empty body; an
    allow-list in front of the endpoint does the same. Neither changes its mind in a
    second: the pause is that of rejected credentials, not that of a passing outage.
    """
    return isinstance(error, TokenEndpointError) and error.status_code == 403
