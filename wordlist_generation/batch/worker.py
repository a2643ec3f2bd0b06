"""The one worker of a batch process: jobs one at a time, in submission order.

A job's remaining items (those missing from its results log) are prepared again, grouped by
batch key (compatible decoding settings) into chunks of at most `BATCH_JOB_PIPELINE_SIZE`, and
each chunk is one engine `submit` (a text completion item adds one row set per prompt, none when
it only echoes its prompt); every finished item is appended to the log before it counts. A failed
chunk is retried item by item, so one bad item cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Hashable, Iterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ..errors import ApiError, GenerationFailed, Overloaded, UpstreamUnavailable
from ..services import chat as completions
from ..services.completions import PreparedCompletion, echo_scores
from ..services.completions import build_completion as build_text_completion
from ..services.state import ServerState
from .finish import finalize
from .records import BatchItem, JobRecord, now
from .registry import Registry
from .uploads import BATCH_ENDPOINT, PreparedItem, load_items, prepare_items

if TYPE_CHECKING:
    from ..engine.params import GenerationJob, GenerationOutput, SamplingParams

log = logging.getLogger(__name__)

Prepared = tuple[BatchItem, PreparedItem]


def generations(prepared: PreparedItem) -> list[completions.PreparedChat]:
    """What an item generates: a chat request itself, a text completion one job per prompt (none
    when it only echoes them)."""
    if isinstance(prepared, PreparedCompletion):
        return prepared.jobs if prepared.generates else []
    return [prepared]


def decoding(prepared: PreparedItem) -> SamplingParams:
    return prepared.first.params if isinstance(prepared, PreparedCompletion) else prepared.params


class Worker:
    """Owns what is running: the job being processed and the generation rows in flight.

    The manager reaches it for two things only: `interrupt` (cancel the job it is running) and
    `stop` (shutdown). Everything else goes through the shared `Registry`.
    """

    def __init__(self, state: ServerState, registry: Registry) -> None:
        self.state = state
        self.registry = registry
        self.current: str | None = None
        self._inflight: list[GenerationJob] = []
        self._stopping = False

    def interrupt(self, job_id: str) -> bool:
        """Cut the rows in flight short if `job_id` is the job running now; False otherwise."""
        if job_id != self.current:
            return False
        self._cut_inflight()
        return True

    def stop(self) -> None:
        """Shutdown: abandon the chunk in flight (redone on the next start) and run no other."""
        self._stopping = True
        self._cut_inflight()

    def _cut_inflight(self) -> None:
        self.state.cancel(self._inflight)

    async def run(self) -> None:
        """Jobs one at a time in submission order, until stopped."""
        registry = self.registry
        while not self._stopping:
            queued = registry.runnable()
            if not queued:
                registry.wake.clear()
                await registry.wake.wait()
                continue
            job = queued[0]
            self.current = job.id
            registry.claimed.add(job.id)
            try:
                await self._process(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s %s failed in the worker", job.kind, job.id)
                await finalize(
                    registry,
                    job,
                    "failed",
                    {"code": "internal_error", "message": "see the server log"},
                )
            finally:
                self.current = None
                registry.claimed.discard(job.id)
                self._inflight = []

    async def _process(self, job: JobRecord) -> None:
        registry, store = self.registry, self.registry.store
        try:
            data = await registry.io(store.read_input, job.id)
            endpoint = job.endpoint or BATCH_ENDPOINT
            items = await asyncio.to_thread(load_items, job.kind, data, endpoint)
        except (OSError, ValueError, ApiError) as exc:
            log.error("%s %s: its input cannot be read: %s", job.kind, job.id, exc)
            await finalize(
                registry,
                job,
                "failed",
                {"code": "input_unavailable", "message": "the stored input is gone"},
            )
            return
        await registry.io(store.repair_tail, job.id)
        if job.status == "pending":
            job.status = "processing"
            job.started_at = now()
            await registry.save(job)
        while await self._run_remaining(job, items, endpoint):
            await self._engine_back(job)  # upstreams down: the deferred items wait, never fail
        if job.status == "cancelling":
            await finalize(registry, job, "cancelled")
        elif not self._stopping:
            await finalize(registry, job, "completed")

    async def _run_remaining(self, job: JobRecord, items: list[BatchItem], endpoint: str) -> bool:
        """Prepare and run the items missing from the results log; True when some were deferred
        because the engine could not take them (no upstream up), to be run once it can."""
        registry = self.registry
        entries = await registry.io(registry.store.read_results, job.id)
        remaining = [item for item in items if item.index not in entries]
        prepared: list[Prepared] = []
        deferred = False
        bodies = [item.body for item in remaining]
        outcomes_of = prepare_items(self.state, bodies, job.job_params(), endpoint)
        async with aclosing(outcomes_of) as outcomes:
            async for position, outcome in outcomes:
                item = remaining[position]
                if isinstance(outcome, UpstreamUnavailable):
                    deferred = True
                elif isinstance(outcome, ApiError):  # e.g. a word list removed since the upload
                    await self._record(job, item, error=outcome.body()["error"])
                else:
                    prepared.append((item, outcome))
        for chunk in self._chunks(prepared):
            if job.status == "cancelling" or self._stopping:
                return False
            deferred = not await self._run_chunk(job, chunk) or deferred
        return deferred and job.status != "cancelling" and not self._stopping

    async def _engine_back(self, job: JobRecord) -> None:
        """Wait until the engine can generate again (an upstream is back), the job is cancelled
        or the worker stops."""
        engine = self.state.require_engine()
        log.warning("%s %s: no upstream is up; its remaining items wait", job.kind, job.id)
        while not (engine.healthy() or job.status == "cancelling" or self._stopping):
            await asyncio.sleep(1.0)

    def _chunks(self, prepared: list[Prepared]) -> Iterator[list[Prepared]]:
        """Items with one batch key (the engine says which rows may share a `submit`), at most
        pipeline-size each."""
        engine = self.state.require_engine()
        size = self.state.settings.BATCH_JOB_PIPELINE_SIZE
        groups: dict[Hashable, list[Prepared]] = {}
        for pair in prepared:
            groups.setdefault(engine.batch_key(decoding(pair[1])), []).append(pair)
        for group in groups.values():
            for start in range(0, len(group), size):
                yield group[start : start + size]

    async def _generate(self, gen_jobs: list[GenerationJob]) -> list[GenerationOutput]:
        """One engine `submit`, holding the chunk's rows in the limiter.

        The limiter (and the scheduler behind it) is shared with chat when both run in one
        process, so a chunk is a share of the running batch; its 429 is for HTTP clients, so the
        worker waits for rows instead. Shielded: a shutdown abandons the batch by
        cancelling its rows, and the slot is released only when the engine has really finished.
        """
        assert self.state.limiter is not None
        self._inflight = gen_jobs  # from here on, a cancel request reaches these jobs
        rows = sum(job.params.rows for job in gen_jobs)
        try:
            while True:
                try:
                    rows = await self.state.limiter.acquire(rows)
                    break
                except Overloaded:
                    await asyncio.sleep(0.2)
            future = self.state.submit(gen_jobs, rows)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                self.state.cancel(gen_jobs)
                raise
        finally:
            self._inflight = []

    async def _run_chunk(self, job: JobRecord, chunk: list[Prepared]) -> bool:
        """Run one chunk and record its items; False when it was left unrecorded because no
        upstream could take it (it runs again once one is back)."""
        runs = [generations(prepared) for _, prepared in chunk]
        try:
            gen_jobs = [g.job() for run in runs for g in run]
            outputs = await self._generate(gen_jobs) if gen_jobs else []
        except asyncio.CancelledError:
            raise
        except UpstreamUnavailable:
            return False
        except Exception as exc:
            if len(chunk) > 1:
                log.exception(
                    "%s %s: a batch of %d failed; retrying its items one by one",
                    job.kind,
                    job.id,
                    len(chunk),
                )
                ran = [await self._run_chunk(job, [pair]) for pair in chunk]
                return all(ran)
            log.exception("%s %s: item %d failed", job.kind, job.id, chunk[0][0].index)
            failed = (
                exc
                if isinstance(exc, ApiError)
                else GenerationFailed("generation failed; see the server log")
            )  # an upstream's 502/504 says what happened; anything else stays in the log
            await self._record(job, chunk[0][0], error=failed.body()["error"])
            return True
        at = 0
        for (item, prepared), run in zip(chunk, runs, strict=True):
            own, at = outputs[at : at + len(run)], at + len(run)
            choices = [c for output in own for c in output.choices]
            if any(c.finish_reason == "cancelled" for c in choices):
                continue  # cut short by a cancel or shutdown: not a result, never recorded
            failures = [
                c.error or "constraint error" for c in choices if c.finish_reason == "error"
            ]
            if failures:
                error = GenerationFailed(f"generation failed: {failures[0]}").body()["error"]
                await self._record(job, item, error=error)
                continue
            await self._record(job, item, response=await self._respond(job, item, prepared, own))
        return True

    async def _respond(
        self,
        job: JobRecord,
        item: BatchItem,
        prepared: PreparedItem,
        outputs: list[GenerationOutput],
    ) -> dict[str, Any]:
        """The response body of one finished item, as its route would answer it."""
        if not isinstance(prepared, PreparedCompletion):
            completion = completions.build_completion(
                prepared, outputs[0], f"chatcmpl-batch-{job.id}-{item.index}"
            )
            return completion.model_dump()
        # The echoed prompts' passes run on the scheduler thread like every row: the worker runs
        # one item at a time, so they need no admission of their own.
        engine = self.state.require_engine()
        scores = await asyncio.to_thread(echo_scores, engine, prepared)
        text = await asyncio.to_thread(
            build_text_completion,
            engine,
            prepared,
            outputs if prepared.generates else None,
            scores,
            f"cmpl-batch-{job.id}-{item.index}",
        )
        return text.model_dump()

    async def _record(
        self,
        job: JobRecord,
        item: BatchItem,
        *,
        response: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Durably append one finished item, then count it (progress never runs ahead of disk)."""
        entry: dict[str, Any] = {"index": item.index}
        if item.custom_id is not None:
            entry["custom_id"] = item.custom_id
        if error is not None:
            entry["error"] = error
        else:
            entry["response"] = response
        line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        await self.registry.io(self.registry.store.append_result, job.id, line)
        job.count(entry)
