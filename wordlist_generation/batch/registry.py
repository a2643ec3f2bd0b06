"""The jobs and files of one batch process, in memory, written through to a `JobStore`.

All mutations happen on the event loop; disk work goes through one I/O thread, in order, so a
slow fsync never blocks a request and two writes of one record never overtake each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

from .records import FINISHED, RUNNABLE, FileRecord, JobRecord
from .store import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry:
    """Shared by the manager (requests), the worker and the retention sweep."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.jobs: dict[str, JobRecord] = {}
        self.files: dict[str, FileRecord] = {}
        #: Jobs the worker or a cancel request is handling right now (the others leave them be).
        self.claimed: set[str] = set()
        #: Background tasks (the worker loop, the sweep, writes it started); cancelled at close.
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Set when a job is added, so an idle worker looks again.
        self.wake = asyncio.Event()
        self._seq = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-io")

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the I/O thread, after every write queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def save(self, job: JobRecord) -> None:
        await self.io(self.store.save_record, job.id, json.dumps(asdict(job)).encode())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def add(self, job: JobRecord) -> None:
        """A new job: on disk first, then visible, then the worker is told."""
        await self.save(job)
        self.jobs[job.id] = job
        self.wake.set()

    async def load(self) -> None:
        """Everything on disk back in memory; unfinished jobs counted from their results logs."""
        await self.io(self.store.ensure)
        records = await self.io(self.store.load_records)
        for job in records:
            if job.status not in FINISHED:
                job.recount(await self.io(self.store.read_results, job.id))
            self.jobs[job.id] = job
        for record in await self.io(self.store.load_files):
            self.files[record.id] = record
        self._seq = max((job.seq for job in records), default=0)
        keep = {job.id for job in self.jobs.values() if job.status not in FINISHED}
        await self.io(self.store.clean_temp, keep)
        queued = self.runnable()
        if queued:
            log.info("resuming %d unfinished batch jobs: %s", len(queued), [j.id for j in queued])

    def runnable(self) -> list[JobRecord]:
        """Jobs the worker may pick up, in submission order."""
        return sorted(
            (j for j in self.jobs.values() if j.status in RUNNABLE and j.id not in self.claimed),
            key=lambda j: j.seq,
        )

    def of_kind(self, kind: str) -> list[JobRecord]:
        """Newest first."""
        return sorted((j for j in self.jobs.values() if j.kind == kind), key=lambda j: -j.seq)

    async def close(self) -> None:
        """Cancel the background tasks, then let the writes already queued finish."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown, wait=True)
