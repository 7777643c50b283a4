"""Resetting chaveiro's process-wide state between tests."""

from __future__ import annotations

from chaveiro._caches import default_cache
from chaveiro._manager import reset_state

__all__ = ["reset"]


def reset() -> None:
    """Forget every token, flight and cool-down held in this process (the default cache too)."""
    reset_state()
    default_cache().clear()
