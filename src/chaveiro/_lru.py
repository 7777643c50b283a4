"""An ordered table for bounded, amortised eviction: oldest first, O(1) a step, memory given back.

Both the in-process token cache (:class:`~chaveiro.MemoryCache`) and the
registry of per-identity state (:mod:`chaveiro._slots`) keep one entry per
identity and let entries go a few at a time, least recently used first. A
``dict`` keeps the table it grew to after its entries are deleted, so a
process that once saw 50,000 identities would keep ~70 bytes for each of
them: :class:`Lru` rebuilds its table when it has shrunk to a quarter of its
peak, which costs O(1) amortised over the deletions that preceded it.

Not thread-safe: its owner holds a lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Lru"]

_V = TypeVar("_V")

_MIN_REBUILD = 64
"""Tables smaller than this are never rebuilt: the saving would be a few bytes."""


class Lru(Generic[_V]):
    """A map that remembers which entry was used least recently."""

    __slots__ = ("_items", "_peak")

    def __init__(self) -> None:
        self._items: OrderedDict[str, _V] = OrderedDict()
        self._peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def values(self) -> list[_V]:
        return list(self._items.values())

    def peek(self, key: str) -> _V | None:
        """The value of ``key``, leaving its place in the order alone."""
        return self._items.get(key)

    def get(self, key: str) -> _V | None:
        """The value of ``key``, which becomes the most recently used."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: _V) -> None:
        """Store ``value`` as the most recently used."""
        items = self._items
        items[key] = value
        items.move_to_end(key)
        self._peak = max(self._peak, len(items))

    def pop(self, key: str) -> _V | None:
        value = self._items.pop(key, None)
        self._shrink()
        return value

    def pop_oldest(self) -> tuple[str, _V]:
        """Remove and return the least recently used entry (``KeyError`` when empty)."""
        item = self._items.popitem(last=False)
        self._shrink()
        return item

    def clear(self) -> None:
        self._items = OrderedDict()
        self._peak = 0

    def _shrink(self) -> None:
        """Give the table's memory back once it holds a quarter of what it once held."""
        if self._peak >= _MIN_REBUILD and len(self._items) <= self._peak // 4:
            self._items = OrderedDict(self._items)
            self._peak = len(self._items)
