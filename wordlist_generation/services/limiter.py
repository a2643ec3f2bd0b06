"""Admission: at most N generations at once, at most M waiting, 429 beyond."""

from __future__ import annotations

import asyncio

from ..errors import Overloaded


class GenerationLimiter:
    """At most `max_concurrency` generations at once; at most `queue_size` waiting; 429 beyond.

    A slot is released when the generation thread really finishes (not when a client leaves), so
    the count always reflects the work the CPU is doing.
    """

    def __init__(self, max_concurrency: int, queue_size: int, retry_after_seconds: int = 5) -> None:
        self._sem = asyncio.Semaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.retry_after_seconds = retry_after_seconds
        self.waiting = 0
        self.running = 0

    async def acquire(self) -> None:
        if self._sem.locked() and self.waiting >= self.queue_size:
            raise Overloaded(
                f"the server is busy ({self.running} running, {self.waiting} waiting); retry later",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()


class SlotLease:
    """A slot acquired for a response that has not started generating yet.

    A stream acquires its slot before the response starts (so that overload is a plain 429), but
    the generation starts only when the response body is first iterated, which may never happen
    (the client leaves first). Whoever holds the lease either hands the slot over to a generation
    (`hand_over`: the engine's completion releases it) or gives it back (`release`); both are
    idempotent, so calling `release` at the end of the response whatever happened is safe.
    """

    def __init__(self, limiter: GenerationLimiter) -> None:
        self._limiter = limiter
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def hand_over(self) -> None:
        self._held = False

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter.release()
