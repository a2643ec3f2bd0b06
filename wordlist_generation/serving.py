"""Everything between an async request and the blocking engine: state, limits, threads.

No module-level state: one `ServerState` is created per app by the lifespan and reached through
`request.app.state.server`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import Overloaded, ServiceUnavailable
from .settings import Settings

if TYPE_CHECKING:
    from .constraints.backends import ConstraintCompiler
    from .constraints.wordlist import WordlistRegistry
    from .engine.generation import Engine
    from .engine.params import GenerationJob, GenerationOutput
    from .phonology import PhonologyService

log = logging.getLogger(__name__)


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


@dataclass
class ServerState:
    settings: Settings
    status: Literal["loading", "ready", "error"] = "loading"
    error: str | None = None
    engine: Engine | None = None
    registry: WordlistRegistry | None = None
    compiler: ConstraintCompiler | None = None
    phonology: PhonologyService | None = None
    limiter: GenerationLimiter | None = None
    executor: ThreadPoolExecutor | None = None
    started_at: float = field(default_factory=time.time)
    ready_seconds: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    _inflight: dict[asyncio.Future[Any], list[GenerationJob]] = field(default_factory=dict)

    def require_engine(self) -> Engine:
        if self.status != "ready" or self.engine is None:
            if self.status == "error":
                raise ServiceUnavailable(f"the model failed to load: {self.error}")
            raise ServiceUnavailable(
                "the model is still loading; retry shortly", headers={"Retry-After": "5"}
            )
        return self.engine

    async def run_generation(
        self,
        jobs: list[GenerationJob],
        is_disconnected: Callable[[], Any] | None = None,
        poll_seconds: float = 0.25,
    ) -> list[GenerationOutput]:
        """Wait for a slot, generate in a worker thread, cancel if the client leaves."""
        engine = self.require_engine()
        assert self.limiter is not None
        await self.limiter.acquire()
        future = self.submit(engine, jobs)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=poll_seconds)
                if done:
                    return future.result()
                if is_disconnected is not None and await is_disconnected():
                    for job in jobs:
                        job.cancel.set()
                    return await future
        except asyncio.CancelledError:  # the server is shutting down under us
            for job in jobs:
                job.cancel.set()
            raise

    def submit(self, engine: Engine, jobs: list[GenerationJob]) -> asyncio.Future[Any]:
        """Start a generation whose limiter slot was already acquired."""
        assert self.limiter is not None
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, engine.generate, jobs)
        self._inflight[future] = jobs

        def _done(f: asyncio.Future[Any]) -> None:
            self._inflight.pop(f, None)
            self.limiter.release()

        future.add_done_callback(_done)
        return future

    async def drain(self, timeout: float) -> None:
        """Stop what is still generating at shutdown.

        uvicorn has already given in-flight requests `SHUTDOWN_GRACE_SECONDS` before the lifespan
        ends, so whatever still runs here is cancelled (it stops within a token) and given at most
        `timeout` seconds to notice, rather than a second full grace period.
        """
        if not self._inflight:
            return
        log.info("cancelling %d generations still running at shutdown", len(self._inflight))
        for jobs in self._inflight.values():
            for job in jobs:
                job.cancel.set()
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        if pending:
            log.warning("%d generations did not stop within %.0f s", len(pending), timeout)
