"""The single-flight LRU shared by the word-list and phonological compilers."""

from __future__ import annotations

import threading
import time

import pytest

from wordlist_generation.constraints.cache import SingleFlightLRU


def test_concurrent_callers_share_one_computation() -> None:
    cache: SingleFlightLRU[str, int] = SingleFlightLRU(4)
    calls = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(results) == [(42, False)] * 5
    assert cache.get_or_compute("k", compute) == (42, True)


def test_failure_reaches_caller_and_is_not_cached() -> None:
    cache: SingleFlightLRU[str, int] = SingleFlightLRU(4)

    def boom() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom)
    assert cache.get_or_compute("k", lambda: 1) == (1, False)


def test_least_recently_used_is_evicted() -> None:
    cache: SingleFlightLRU[int, int] = SingleFlightLRU(2)
    cache.get_or_compute(1, lambda: 1)
    cache.get_or_compute(2, lambda: 2)
    cache.get_or_compute(1, lambda: 1)  # 1 is now the most recent
    cache.get_or_compute(3, lambda: 3)
    assert len(cache) == 2
    assert cache.get_or_compute(1, lambda: -1) == (1, True)
    assert cache.get_or_compute(2, lambda: -2) == (-2, False)


def test_the_byte_bound_evicts_the_least_recently_used() -> None:
    cache: SingleFlightLRU[str, int] = SingleFlightLRU(10, max_bytes=100)

    def weigh(value: int) -> int:
        return value

    cache.get_or_compute("a", lambda: 40, weigh)
    cache.get_or_compute("b", lambda: 40, weigh)
    cache.get_or_compute("a", lambda: -1, weigh)  # a is now the most recent
    cache.get_or_compute("c", lambda: 50, weigh)  # 130 > 100: b leaves
    assert cache.bytes == 90 and len(cache) == 2
    assert cache.get("b") is None and cache.get("a") == 40
    # Heavier than the whole budget: handed out, never kept, nothing else evicted.
    assert cache.get_or_compute("huge", lambda: 500, weigh) == (500, False)
    assert cache.get("huge") is None and cache.bytes == 90
