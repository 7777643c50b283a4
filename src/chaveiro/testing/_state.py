"""Resetting chaveiro's process-wide state between tests."""

from __future__ import annotations

from chaveiro._caches import default_cache, reset_cache_health
from chaveiro._dpop import forget_nonces
from chaveiro._slots import reset_state

__all__ = ["reset"]


def reset() -> None:
    """Forget every token, flight and cool-down held in this process (the default cache too).

    Shared caches' failure memory goes too: a Redis left alone after an error is asked again,
    and so do the DPoP nonces servers gave.
    """
    reset_state()
    forget_nonces()
    default_cache().clear()
    reset_cache_health()
