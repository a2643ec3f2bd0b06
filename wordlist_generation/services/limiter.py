"""Admission, sized in rows: at most `capacity` rows decoding at once, at most `queue_size`
requests waiting (first come, first served), 429 beyond; and `WorkGate`, the bound on the other
heavy work a request can start (constraint compiles, previews).

A request takes as many rows as the scheduler will decode for it (`SamplingParams.rows`: its `n`
choices, times drafts, or its beams), capped at the capacity so that any request can run alone.
Rows are given back when the engine has really finished (not when a client leaves), so the count
always reflects the work the CPU is doing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import Overloaded

T = TypeVar("T")


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

    def _busy(self) -> Overloaded:
        return Overloaded(
            f"the server is busy ({self.running} rows running, {self.waiting} requests "
            "waiting); retry later",
            headers={"Retry-After": str(self.retry_after_seconds)},
        )

    def _fits_now(self, rows: int) -> bool:
        return not self._queue and self.running + rows <= self.capacity

    def check(self, rows: int = 1) -> None:
        """The cheap fast-fail, before a request does any work (compiling its constraint,
        tokenizing its prompt): 429 when `acquire` would refuse it now. The real decision stays
        `acquire`'s, once the request is ready to generate."""
        rows = self.rows_for(rows)
        if not self._fits_now(rows) and len(self._queue) >= self.queue_size:
            raise self._busy()

    async def acquire(self, rows: int = 1) -> int:
        """Wait for `rows` rows (capped at the capacity); returns how many were taken."""
        rows = self.rows_for(rows)
        if self._fits_now(rows):
            self.running += rows
            return rows
        if len(self._queue) >= self.queue_size:
            raise self._busy()
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


class WorkGate:
    """At most `concurrency` pieces of heavy work at once (constraint compiles, previews), at
    most `queue_size` waiting for a turn, 429 beyond: work that no admission control counted
    could otherwise pile up in threads without bound.

    `run(..., wait=True)` waits however long the queue is (the batch worker, whose items must not
    fail because chat is busy); the number running stays bounded either way.
    """

    def __init__(self, concurrency: int, queue_size: int, retry_after_seconds: int = 5) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.retry_after_seconds = retry_after_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self.running = 0
        self.waiting = 0

    async def run(self, fn: Callable[..., T], *args: Any, wait: bool = False) -> T:
        """`fn(*args)` in a worker thread once a slot is free. The slot is held until the thread
        has finished, even when the caller is cancelled first (a client that leaves cannot stop
        a compilation): the bound is on threads at work, not on callers."""
        if self._slots.locked() and not wait and self.waiting >= self.queue_size:
            raise Overloaded(
                f"the server is busy ({self.running} constraint compilations or previews "
                f"running, {self.waiting} waiting); retry later",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(contextvars.copy_context().run, fn, *args)
            )
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return await asyncio.shield(future)

    def _done(self, _: object) -> None:
        self.running -= 1
        self._slots.release()


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
