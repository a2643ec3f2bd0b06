"""Admission, sized in rows: at most `capacity` rows decoding at once, at most `queue_size`
requests waiting (first come, first served), 429 beyond.

A request takes as many rows as the scheduler will decode for it (`SamplingParams.rows`: its `n`
choices, times drafts, or its beams), capped at the capacity so that any request can run alone.
Rows are given back when the engine has really finished (not when a client leaves), so the count
always reflects the work the CPU is doing.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..errors import Overloaded


class GenerationLimiter:
    def __init__(self, capacity: int, queue_size: int, retry_after_seconds: int = 5) -> None:
        self.capacity = capacity
        self.queue_size = queue_size
        self.retry_after_seconds = retry_after_seconds
        #: Rows in use.
        self.running = 0
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def rows_for(self, rows: int) -> int:
        return max(1, min(rows, self.capacity))

    async def acquire(self, rows: int = 1) -> int:
        """Wait for `rows` rows (capped at the capacity); returns how many were taken."""
        rows = self.rows_for(rows)
        if not self._queue and self.running + rows <= self.capacity:
            self.running += rows
            return rows
        if len(self._queue) >= self.queue_size:
            raise Overloaded(
                f"the server is busy ({self.running} rows running, {self.waiting} requests "
                "waiting); retry later",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (rows, future)
        self._queue.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._queue:
                self._queue.remove(entry)
            elif future.done() and not future.cancelled():
                self.release(rows)  # granted just as the waiter left
            raise
        return rows

    def release(self, rows: int = 1) -> None:
        self.running -= rows
        while self._queue and self.running + self._queue[0][0] <= self.capacity:
            rows_next, future = self._queue.popleft()
            if future.done():
                continue
            self.running += rows_next
            future.set_result(None)


class SlotLease:
    """Rows acquired for a response that has not started generating yet.

    A stream acquires its rows before the response starts (so that overload is a plain 429), but
    the generation starts only when the response body is first iterated, which may never happen
    (the client leaves first). Whoever holds the lease either hands the rows over to a generation
    (`hand_over`: the engine's completion releases them) or gives them back (`release`); both are
    idempotent, so calling `release` at the end of the response whatever happened is safe.
    """

    def __init__(self, limiter: GenerationLimiter, rows: int = 1) -> None:
        self._limiter = limiter
        self.rows = rows
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def hand_over(self) -> None:
        self._held = False

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter.release(self.rows)
