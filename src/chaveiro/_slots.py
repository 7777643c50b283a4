"""The process-wide state of each identity: one slot per identity and cache, kept while it matters.

A :class:`Slot` holds what every auth object of one identity shares in this
process: the token, the flight in progress, the last failure and its
cool-down, the counters. Every live token manager of the identity holds the
slot's :class:`Hold` (one object, shared by all of them). The registry keeps
the slot itself, and lets it go once it is *idle*: nobody holds it, no flight
is under way, no cool-down is running, and it has no token that is still
valid and still kept by its cache (a :class:`~chaveiro.MemoryCache` drops the
least recently used beyond ``max_entries``). A slot is never let go while it is
held: two slots for one identity would mean two flights.

Letting go is amortised on normal activity, with no thread of its own: each
new token manager and each token flow looks at a few of its cache's slots,
the least recently looked at first (:func:`sweep`), holding the registry's
lock for those few only. The warm path never touches the registry, so its cost
does not grow with the number of identities. The counters of a slot that goes
are added to the totals OpenTelemetry reads, which never go down.

The slots survive ``fork()``: a child keeps the tokens and starts with fresh locks.
"""

from __future__ import annotations

import os
import threading
import weakref

from chaveiro import _telemetry
from chaveiro._caches import MemoryCache, TokenCache
from chaveiro._errors import TokenError
from chaveiro._flight import Flight, Stats, wait_for_renewals
from chaveiro._lru import Lru
from chaveiro._token import Token

__all__ = [
    "SWEEP_KEPT",
    "SWEEP_MAX",
    "Hold",
    "Slot",
    "count",
    "hold",
    "keys",
    "reset_state",
    "sweep",
]

SWEEP_KEPT = 4
"""A sweep stops after this many slots that must stay."""
SWEEP_MAX = 64
"""A sweep looks at no more than this many slots: the lock is held for microseconds."""

Labels = tuple[str, str, str]
"""``(server.address, provider, cache backend)``: what telemetry says about an identity."""


class Slot:
    """Process-wide state of one identity in one cache."""

    __slots__ = (
        "failure",
        "failure_until",
        "failures",
        "flight",
        "hold",
        "labels",
        "lock",
        "stats",
        "succeeded",
        "token",
    )

    def __init__(self) -> None:
        self.hold: weakref.ref[Hold] | None = None
        """The :class:`Hold` that live token managers share, while any is alive."""
        self.labels: Labels | None = None
        """For telemetry, once known."""
        self.stats = Stats()
        self.token: Token | None = None
        self.restart()

    def restart(self) -> None:
        """A new lock, and no flight or failure (in a child after ``fork()``, in tests)."""
        self.lock = threading.Lock()
        self.flight: Flight | None = None
        self.failure: TokenError | None = None
        self.failure_until = 0.0
        self.failures = 0
        self.succeeded = False

    def reused(self, *, waited: bool = False) -> None:
        """Count a request answered without a token request of its own."""
        with self.lock:
            self.stats.reused += 1
            self.stats.waited += waited

    def held(self) -> bool:
        return self.hold is not None and self.hold() is not None

    def idle(self, now: float, cached: bool) -> bool:
        """True when nothing here is worth keeping; ``cached``: its cache still keeps the key."""
        if self.held() or self.flight is not None:
            return False
        if self.failure is not None and now < self.failure_until:
            return False  # the cool-down protects the provider from auth objects made per call
        token = self.token
        return token is None or not cached or not token.is_valid(now)


class Hold:
    """What token managers hold to keep their identity's slot: one per slot, shared."""

    __slots__ = ("__weakref__", "slot")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot


_registry_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[TokenCache, Lru[Slot]] = weakref.WeakKeyDictionary()
_retired: dict[Labels, tuple[int, int]] = {}
"""The reuse and cache-hit counts of slots let go, per labels."""


def hold(cache: TokenCache, key: str, now: float) -> Hold:
    """Hold the slot of ``key`` in ``cache``, made if need be; a few idle slots go meanwhile."""
    with _registry_lock:
        slots = _registry.get(cache)
        if slots is None:
            slots = _registry[cache] = Lru()
        slot = slots.peek(key)
        if slot is None:
            slot = Slot()
            slots.put(key, slot)
        held = None if slot.hold is None else slot.hold()
        if held is None:
            held = Hold(slot)
            slot.hold = weakref.ref(held)
        _sweep(cache, slots, now)
        if isinstance(cache, MemoryCache):
            cache.touch(key)  # in use: the least recently used go first
    return held


def sweep(cache: TokenCache, now: float) -> None:
    """Let a few idle slots of ``cache`` go (and their expired tokens, from a MemoryCache)."""
    with _registry_lock:
        slots = _registry.get(cache)
        if slots is not None:
            _sweep(cache, slots, now)


def _sweep(cache: TokenCache, slots: Lru[Slot], now: float) -> None:
    memory = cache if isinstance(cache, MemoryCache) else None
    kept = 0
    for _ in range(min(SWEEP_MAX, len(slots))):
        key, slot = slots.pop_oldest()
        if not slot.idle(now, memory is None or key in memory):
            slots.put(key, slot)  # looked at: to the back of the line
            kept += 1
            if kept >= SWEEP_KEPT:
                return
            continue
        if slot.labels is not None:
            reused, hits = _retired.get(slot.labels, (0, 0))
            _retired[slot.labels] = (reused + slot.stats.reused, hits + slot.stats.cache_hits)
        if memory is not None:
            memory.discard_expired(key, now)


def count(cache: TokenCache) -> int:
    """How many slots ``cache`` has in this process."""
    with _registry_lock:
        slots = _registry.get(cache)
        return 0 if slots is None else len(slots)


def keys(cache: TokenCache) -> set[str]:
    """The identity keys that have a slot of ``cache`` in this process."""
    with _registry_lock:
        return set(_registry.get(cache) or ())


def _counts() -> list[tuple[str, str, str, int, int]]:
    """What telemetry's observable counters read: every identity's counters, labelled."""
    with _registry_lock:
        slots = [slot for slots in _registry.values() for slot in slots.values()]
        retired = list(_retired.items())
    rows = [(*labels, reused, hits) for labels, (reused, hits) in retired]
    rows += [
        (*slot.labels, slot.stats.reused, slot.stats.cache_hits)
        for slot in slots
        if slot.labels is not None
    ]
    return rows


_telemetry.use_counts(_counts)


def reset_state() -> None:
    """Forget every token, flight and cool-down held in this process (for tests).

    Background renewals finish first, so none can bring a token back afterwards.
    Slots nobody holds go; held ones start afresh.
    """
    wait_for_renewals()
    with _registry_lock:
        _retired.clear()
        for slots in list(_registry.values()):
            for key in list(slots):
                slot = slots.peek(key)
                assert slot is not None
                if not slot.held():
                    slots.pop(key)
                    continue
                slot.restart()
                slot.token = None
                slot.stats = Stats()


def _after_fork_in_child() -> None:
    # Locks held by other threads at fork() time would stay held forever in the
    # child, and their flights would never finish: start every slot afresh but
    # keep the tokens, which are still good.
    global _registry_lock  # noqa: PLW0603
    _registry_lock = threading.Lock()
    for slots in list(_registry.values()):
        for slot in slots.values():
            slot.restart()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
