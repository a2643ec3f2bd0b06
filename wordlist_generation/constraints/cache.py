"""A bounded LRU in which each key is computed once, however many threads ask at the same time.

Compiling a constraint takes from milliseconds to a second; two requests for the same word list
(or the same phonological solution) arriving together must share one compilation, and a failed
compilation must reach every waiter and leave nothing cached.

Bounded twice: at most `size` entries, and at most `max_bytes` for the sum of their weights (what
`compute` says each entry costs; see `ConstraintCompiler` for how a constraint is weighed). The
least recently used entries leave first; an entry heavier than the whole budget is handed to its
callers but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlightLRU(Generic[K, V]):
    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        if size < 1:
            raise ValueError("cache size must be >= 1")
        self.size = size
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[K, Future[V]] = {}

    def get(self, key: K) -> V | None:
        """The cached value (now the most recently used), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def get_or_compute(
        self, key: K, compute: Callable[[], V], weigh: Callable[[V], int] | None = None
    ) -> tuple[V, bool]:
        """(value, cache_hit). `cache_hit` is False for the computing caller and for callers that
        waited for it: only a value already cached counts as a hit. `weigh(value)` is the
        entry's weight in bytes (0 without it)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
                return entry[0], True
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = self._inflight[key] = Future()
        assert future is not None
        if not owner:
            return future.result(), False
        try:
            value = compute()
            weight = weigh(value) if weigh is not None else 0
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            if self.max_bytes is None or weight <= self.max_bytes:
                self._items[key] = (value, weight)
                self._bytes += weight
                self._evict()
            del self._inflight[key]
        future.set_result(value)
        return value, False

    def _evict(self) -> None:
        while len(self._items) > self.size or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        ):
            _, (_, weight) = self._items.popitem(last=False)
            self._bytes -= weight

    @property
    def bytes(self) -> int:
        """The sum of the weights of the cached entries."""
        with self._lock:
            return self._bytes

    def values(self) -> list[V]:
        with self._lock:
            return [value for value, _ in self._items.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
