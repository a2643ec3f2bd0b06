"""A bounded LRU in which each key is computed once, however many threads ask at the same time.

Compiling a constraint takes from milliseconds to a second; two requests for the same word list
(or the same phonological solution) arriving together must share one compilation, and a failed
compilation must reach every waiter and leave nothing cached.
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
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("cache size must be >= 1")
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()
        self._inflight: dict[K, Future[V]] = {}

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> tuple[V, bool]:
        """(value, cache_hit). `cache_hit` is False for the computing caller and for callers that
        waited for it: only a value already cached counts as a hit."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], True
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = self._inflight[key] = Future()
        assert future is not None
        if not owner:
            return future.result(), False
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            del self._inflight[key]
        future.set_result(value)
        return value, False

    def values(self) -> list[V]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
