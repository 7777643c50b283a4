"""Objects that travel: pickled and copied as their settings, arriving as the same identity.

``pickle`` and ``copy.deepcopy`` of a cache (and of an auth object) must not carry
a lock, a thread, a connection or a token, and the copy must go on sharing what
the original shares. Like :mod:`logging` loggers, which pickle as their name, an
object reduces to ``revive(factory, ident, args, kwargs)``: ``ident`` names the
original, and reviving it in a process where that original (or an earlier
revival of it) is alive returns that very object; anywhere else the object is
built from its settings, once, and later revivals of the same ident return it.

So ``copy.deepcopy(cache) is cache``; a pickle round trip in the same process
gives the object back; and in a worker process every auth object that shared one
cache in the parent shares one cache again.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["reduce", "revive"]

_T = TypeVar("_T")
_live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def _ident_of(obj: object) -> str:
    """The name ``obj`` travels under, given on its first trip."""
    with _lock:
        ident: str | None = getattr(obj, "_travel_ident", None)
        if ident is None:
            ident = os.urandom(12).hex()
            obj._travel_ident = ident  # type: ignore[attr-defined]
            _live[ident] = obj
    return ident


def reduce(
    obj: object,
    factory: Callable[..., object],
    args: tuple[object, ...],
    kwargs: Mapping[str, object] | None = None,
) -> tuple[Callable[..., object], tuple[object, ...]]:
    """``__reduce__`` for ``obj``: rebuilt by ``factory(*args, **kwargs)`` where it is not alive."""
    return revive, (factory, _ident_of(obj), args, dict(kwargs or {}))


def revive(
    factory: Callable[..., _T],
    ident: str,
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
) -> _T:
    """The live object named ``ident`` in this process, else a new one from its settings."""
    with _lock:
        found: _T | None = _live.get(ident)
    if found is not None:
        return found
    made = factory(*args, **kwargs)  # outside the lock: a factory may import or build a pool
    with _lock:
        raced: _T | None = _live.get(ident)
        if raced is not None:
            return raced
        made._travel_ident = ident  # type: ignore[attr-defined]
        _live[ident] = made
    return made
