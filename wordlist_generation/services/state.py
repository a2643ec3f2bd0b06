"""The per-app server state: settings, status, engine, compiler, limiter, in-flight work.

No module-level state: one `ServerState` is created per app by the lifespan and reached through
`request.app.state.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..engine.params import GenerationOutput
from ..errors import ServiceUnavailable
from ..settings import Settings
from .limiter import GenerationLimiter, WorkGate

if TYPE_CHECKING:
    from ..constraints.compiler import ConstraintCompiler
    from ..constraints.phonology import PhonologyHandler
    from ..constraints.wordlist import WordlistRegistry
    from ..engine.base import Engine
    from ..engine.params import GenerationJob

log = logging.getLogger(__name__)


def left_in_queue(job: GenerationJob) -> GenerationOutput:
    """The output of a job whose client left before it started: nothing generated."""
    return GenerationOutput(
        choices=[], prompt_tokens=len(job.prompt_ids), completion_tokens=0, seconds=0.0,
        cancelled=True,
    )


@dataclass
class ServerState:
    settings: Settings
    #: `ready` only once every route of this app works (model, constraints, batch worker).
    status: Literal["loading", "ready", "error"] = "loading"
    error: str | None = None
    engine: Engine | None = None
    registry: WordlistRegistry | None = None
    compiler: ConstraintCompiler | None = None
    phonology: PhonologyHandler | None = None
    limiter: GenerationLimiter | None = None
    #: Bounds constraint compiles and previews (`COMPILE_MAX_CONCURRENCY`, `COMPILE_QUEUE_SIZE`).
    gate: WorkGate | None = None
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
        """Wait for a slot, generate, cancel if the client leaves.

        A client that leaves while its request still waits for rows gives its place in the queue
        back at once (the next poll), not when it would have reached the front; its outputs come
        back empty and `cancelled`.
        """
        self.require_engine()
        assert self.limiter is not None
        admitted = asyncio.ensure_future(
            self.limiter.acquire(sum(job.params.rows for job in jobs))
        )
        try:
            while not admitted.done():
                await asyncio.wait({admitted}, timeout=poll_seconds)
                if (
                    not admitted.done()
                    and is_disconnected is not None
                    and await is_disconnected()
                ):
                    admitted.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await admitted
                    if not admitted.cancelled():  # granted just as the client left
                        self.limiter.release(admitted.result())
                    return [left_in_queue(job) for job in jobs]
        except asyncio.CancelledError:
            admitted.cancel()
            raise
        rows = admitted.result()
        future = self.submit(jobs, rows)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=poll_seconds)
                if done:
                    return future.result()
                if is_disconnected is not None and await is_disconnected():
                    self.cancel(jobs)
                    return await future
        except asyncio.CancelledError:  # the server is shutting down under us
            self.cancel(jobs)
            raise

    def submit(self, jobs: list[GenerationJob], rows: int) -> asyncio.Future[Any]:
        """Start a generation whose `rows` were already acquired from the limiter; they are
        released when the engine has really finished (not when a client leaves), so the count
        always reflects the work being done."""
        assert self.limiter is not None
        limiter = self.limiter
        try:
            future = asyncio.ensure_future(self.require_engine().submit(jobs))
        except BaseException:
            limiter.release(rows)
            raise
        self._inflight[future] = jobs

        def _done(f: asyncio.Future[Any]) -> None:
            self._inflight.pop(f, None)
            limiter.release(rows)

        future.add_done_callback(_done)
        return future

    def cancel(self, jobs: list[GenerationJob]) -> None:
        if self.engine is not None:
            for job in jobs:
                self.engine.cancel(job)

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
            self.cancel(jobs)
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        if pending:
            log.warning("%d generations did not stop within %.0f s", len(pending), timeout)
