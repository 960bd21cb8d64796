"""A small in-process LRU cache whose entries expire individually (auth caches, platform §4)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    """LRU map of at most ``max_entries`` items, each with its own time to live.

    Not thread-safe; meant for one event loop. ``clock`` is a monotonic seconds source.
    """

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The live value for ``key`` (refreshing its LRU position), else ``None``."""
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds; a non-positive TTL stores nothing."""
        if ttl_s <= 0:
            self._data.pop(key, None)
            return
        self._data[key] = (self._clock() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget ``key`` if present."""
        self._data.pop(key, None)

    def discard_where(self, predicate: Callable[[V], bool]) -> int:
        """Forget every entry whose value matches ``predicate``; return how many."""
        doomed = [k for k, (_, v) in self._data.items() if predicate(v)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
