"""Memory is bounded by identities in use: idle state goes on normal activity, MemoryCache is LRU.

A gateway makes an auth object per tenant. These tests make many identities
against the real fake server, drop them, let their tokens expire on an injected
clock, and check that what the process keeps shrinks back with ordinary use
(new auth objects, token requests), that a live auth object keeps its state,
and that ``MemoryCache(max_entries=N)`` holds its bound.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections import OrderedDict
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from chaveiro import ConfigurationError, MemoryCache, Token
from chaveiro._caches import DEFAULT_MAX_ENTRIES, default_cache
from chaveiro._slots import SWEEP_KEPT, count, hold, keys, sweep
from chaveiro.testing import FakeTokenServer, reset
from tests.conftest import FakeClock

LIFETIME = 3600.0


def _scopes_fetched(server: FakeTokenServer) -> list[str]:
    return [r.fields.get("scope", "") for r in server.token_request_log]


def _activity(make_auth: Any, clock: FakeClock, cache: Any, rounds: int) -> None:
    """What a gateway does anyway: an auth object for a tenant, a token for a request."""
    for _ in range(rounds):
        make_auth(scope="hot", clock=clock, cache=cache).get_token()


def _table_size(entries: int) -> int:
    return sys.getsizeof(OrderedDict((str(i), i) for i in range(entries)))


@pytest.fixture(autouse=True)
def _no_leftovers() -> None:
    """Auth objects of earlier tests that only the cycle collector frees hold no slot here."""
    gc.collect()
    reset()


def test_dropped_identities_go_once_expired_with_normal_activity(server, make_auth):
    """The field: 50,000 tenants left ~1 KB each for ever; now slots and tokens go."""
    clock, cache = FakeClock(), default_cache()
    before = keys(cache)  # auth objects that other tests still hold
    tenants = [make_auth(scope=f"tenant-{i}", clock=clock) for i in range(300)]
    for auth in tenants:
        auth.get_token()
    mine = {auth._manager.identity.key for auth in tenants}
    assert keys(cache) - before == mine
    assert len(cache._tokens) == 300
    peak = sys.getsizeof(cache._tokens._items)
    assert peak > 4 * _table_size(64)

    del tenants, auth
    gc.collect()
    _activity(make_auth, clock, cache, 5)
    hot = make_auth(scope="hot", clock=clock)._manager.identity.key
    # Not expired yet: a tenant's next auth object still finds its token.
    assert keys(cache) - before == mine | {hot}
    make_auth(scope="tenant-7", clock=clock).get_token()
    assert server.token_requests == 301  # 300 tenants and "hot"; tenant-7 found its token

    gc.collect()  # what the cycle collector does anyway, now rather than later
    clock.now += LIFETIME + 1
    _activity(make_auth, clock, cache, 10)
    assert keys(cache) - before == {hot}  # in use a moment ago
    assert not mine & keys(cache)
    assert list(cache._tokens) == [hot]
    # The tables themselves gave their memory back.
    assert sys.getsizeof(cache._tokens._items) <= _table_size(64)


def test_a_live_auth_object_keeps_its_state_through_any_sweep(server, make_auth):
    clock = FakeClock()
    auth = make_auth(scope="kept", clock=clock)
    auth.get_token()
    slot = auth._manager.slot
    clock.now += LIFETIME + 1  # expired, and nobody asked for a while
    _activity(make_auth, clock, default_cache(), 20)
    assert auth._manager.slot is slot
    assert hold(default_cache(), auth._manager.identity.key, clock()).slot is slot
    auth.get_token()
    assert auth.stats.fetched == 2  # one identity, one slot: its counters carry on


def test_dropping_an_auth_object_releases_its_slot(server, make_auth):
    clock, cache = FakeClock(), MemoryCache()
    auth = make_auth(scope="gone", clock=clock, cache=cache)
    with requests.Session() as session:
        session.auth = auth
        assert session.get(server.api_url()).status_code == 200
    del session
    slot = auth._manager.slot
    kept = weakref.ref(auth._manager._hold)
    twin = make_auth(scope="gone", clock=clock, cache=cache)  # the same identity: one hold
    assert twin._manager._hold is auth._manager._hold

    gc.disable()  # no cycle holds an auth object: dropping it is enough
    try:
        del auth
        assert kept() is not None
        assert slot.held()
        del twin
        assert kept() is None
        assert not slot.held()
    finally:
        gc.enable()

    clock.now += LIFETIME + 1
    sweep(cache, clock())
    assert count(cache) == 0
    assert len(cache._tokens) == 0


def test_close_lets_go_and_the_object_stays_usable(server, make_auth):
    clock, cache = FakeClock(), MemoryCache()
    auth = make_auth(scope="closed", clock=clock, cache=cache)
    old = auth.get_token()
    auth.close()
    sweep(cache, clock())
    assert count(cache) == 1  # its token is still valid: kept for the next auth object
    clock.now += LIFETIME + 1
    sweep(cache, clock())
    assert count(cache) == 0

    new = auth.get_token()  # holds a slot again
    assert new.access_token != old.access_token
    assert count(cache) == 1
    assert auth._manager._hold is not None
    assert server.token_requests == 2


def test_a_cool_down_outlives_the_auth_objects_made_per_call(server, make_auth):
    """A rejected secret is not re-sent by the next object just because the last one went."""
    from chaveiro import CredentialsRejectedError  # noqa: PLC0415

    clock = FakeClock()
    for _ in range(3):
        auth = make_auth(client_secret="wrong", clock=clock)
        with pytest.raises(CredentialsRejectedError):
            auth.get_token()
        del auth
        gc.collect()
        _activity(make_auth, clock, default_cache(), 1)
    assert sum(r.fields.get("scope", "") != "hot" for r in server.token_request_log) == 1


# ---- MemoryCache(max_entries=N) ------------------------------------------------------------


def test_max_entries_bounds_the_cache_and_unheld_state(server, make_auth):
    clock, cache = FakeClock(), MemoryCache(max_entries=5)
    for i in range(40):
        make_auth(scope=f"cold-{i}", clock=clock, cache=cache).get_token()
        assert len(cache._tokens) <= 5
    gc.collect()
    _activity(make_auth, clock, cache, 20)
    assert len(cache._tokens) <= 5
    assert count(cache) <= 5  # tokens the cache dropped are not kept elsewhere either


def test_a_hot_identity_is_never_evicted_while_in_use(server, make_auth):
    clock, cache = FakeClock(), MemoryCache(max_entries=3)
    held = make_auth(scope="hot-held", clock=clock, cache=cache)
    for i in range(60):
        held.get_token()
        make_auth(scope="hot-per-call", clock=clock, cache=cache).get_token()
        make_auth(scope=f"cold-{i}", clock=clock, cache=cache).get_token()
    fetched = _scopes_fetched(server)
    assert fetched.count("hot-held") == 1
    assert fetched.count("hot-per-call") == 1
    assert len(cache._tokens) <= 3


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "100", float("inf")])
def test_bad_max_entries_says_what_to_do(bad: object):
    with pytest.raises(ConfigurationError, match="max_entries must be a whole number >= 1"):
        MemoryCache(max_entries=bad)  # type: ignore[arg-type]


def test_default_bound_and_no_bound():
    assert default_cache().max_entries == DEFAULT_MAX_ENTRIES == 10_000
    assert MemoryCache(max_entries=None).max_entries is None
    assert "max_entries=10000" in repr(MemoryCache())


def _token(expires_at: float) -> Token:
    return Token(access_token="x" * 32, expires_at=expires_at, issued_at=expires_at - LIFETIME)


@settings(max_examples=60, deadline=None)
@given(
    max_entries=st.integers(min_value=1, max_value=6),
    ops=st.lists(st.tuples(st.sampled_from(["get", "set"]), st.integers(0, 9)), max_size=60),
)
def test_memory_cache_is_least_recently_used(max_entries: int, ops: list[tuple[str, int]]):
    """Against a model: a get or set makes a key the most recent; the least recent go first."""
    cache, model = MemoryCache(max_entries=max_entries), OrderedDict[str, Token]()
    for op, n in ops:
        key = f"k{n}"
        if op == "set":
            token = _token(1_000.0 + n)
            cache.set(key, token)
            model[key] = token
            model.move_to_end(key)
            while len(model) > max_entries:
                model.popitem(last=False)
        else:
            assert cache.get(key) is model.get(key)
            if key in model:
                model.move_to_end(key)
        assert list(cache._tokens) == list(model)


@settings(max_examples=40, deadline=None)
@given(
    lifetimes=st.lists(st.integers(min_value=1, max_value=7200), min_size=1, max_size=80),
    later=st.integers(min_value=0, max_value=7200),
    held=st.sets(st.integers(0, 79), max_size=10),
)
def test_sweeping_drops_exactly_what_has_expired_and_nobody_holds(
    lifetimes: list[int], later: int, held: set[int]
):
    """The expiry rule of the registry: a slot goes iff it is unheld and its token expired."""
    now, cache = 1_700_000_000.0, MemoryCache(max_entries=None)
    holds = []
    for i, lifetime in enumerate(lifetimes):
        token = _token(now + lifetime)
        h = hold(cache, f"id-{i}", now)
        h.slot.token = token
        cache.set(f"id-{i}", token)
        if i in held:
            holds.append(h)
    del h
    for _ in range(2 * len(lifetimes) // SWEEP_KEPT + 2):  # enough to look at every slot
        sweep(cache, now + later)
    alive = {f"id-{i}" for i, life in enumerate(lifetimes) if life > later or i in held}
    assert count(cache) == len(alive)
    assert set(cache._tokens) == alive  # a held identity keeps even an expired token
    assert len(holds) == len(held & set(range(len(lifetimes))))  # held to the end
