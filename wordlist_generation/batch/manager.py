"""The job manager: what requests reach. Submission, queries and cancel over the shared registry.

Two front doors share everything below them: the job API (`/v1/batch/jobs`, a JSON array of chat
requests with job-wide parameters) and the OpenAI Batch API (`/v1/files` + `/v1/batches`, JSONL
lines whose bodies keep their own parameters). Both become a `JobRecord` that the one `Worker`
runs; `retention` expires them. Only a fully valid upload becomes a job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ..errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    JobNotFound,
    NotFound,
    ServiceUnavailable,
)
from ..services.state import ServerState
from .finish import finalize, results_array
from .params import JobParams
from .records import FINISHED, FileRecord, JobKind, JobRecord, now
from .registry import Registry
from .retention import sweep, sweeper
from .store import JobStore, copy_durable, copy_limited
from .uploads import (
    BATCH_ENDPOINT,
    BATCH_ENDPOINTS,
    locate,
    parse_batch_file,
    parse_job_upload,
    parse_jsonl,
    prepare_items,
)
from .worker import Worker

log = logging.getLogger(__name__)

COMPLETION_WINDOWS: frozenset[str] = frozenset({"24h"})
MAX_METADATA_PAIRS = 16

#: Where an item sits in its upload: (message label, param prefix, extra error fields).
Location = tuple[str, str, dict[str, Any]]


@contextmanager
def _removed_on_error(path: Path) -> Iterator[None]:
    """An upload that does not become a job (or a file) leaves nothing behind."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class JobManager:
    """The registry of one batch process, its worker and its retention sweep, behind one API.

    The manager handles requests (everything here runs on the event loop, disk work on the
    registry's I/O thread); the `Worker` runs jobs; both share the `Registry`. A cancel is the one
    place they meet: the manager finishes a waiting job itself and asks the worker to interrupt
    the running one.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.settings = state.settings
        self.registry = Registry(
            JobStore(self.settings.BATCH_JOB_DIR, self.settings.BATCH_JOB_TEMP_DIR)
        )
        self.worker = Worker(state, self.registry)

    @property
    def ttl_seconds(self) -> float:
        return self.settings.BATCH_RESULT_TTL_HOURS * 3600

    # ------------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Reload the registry from disk and start the worker and the retention sweep."""
        registry = self.registry
        await registry.load()
        for job in [j for j in registry.jobs.values() if j.status == "cancelling"]:
            await finalize(registry, job, "cancelled")
        self.sweep(now())
        registry.spawn(self.worker.run())
        registry.spawn(sweeper(registry, self.ttl_seconds))

    async def stop(self) -> None:
        """SIGTERM: abandon the batch in flight (redone on the next start) and stop at once."""
        self.worker.stop()
        await self.registry.close()
        log.info("batch worker stopped")

    def sweep(self, at: float) -> None:
        sweep(self.registry, at, self.ttl_seconds)

    # ------------------------------------------------------------------- submission

    def _new_job(self, job_id: str, kind: JobKind, total: int, **fields: Any) -> JobRecord:
        return JobRecord(
            id=job_id,
            kind=kind,
            seq=self.registry.next_seq(),
            status="pending",
            total=total,
            submitted_at=now(),
            model=self.state.require_engine().model_id,
            **fields,
        )

    async def _check_items(
        self,
        bodies: Sequence[Any],
        params: JobParams | None,
        where: Callable[[int], Location],
        endpoint: str = BATCH_ENDPOINT,
    ) -> None:
        """Every item prepared as the worker will prepare it; the first error is raised, located."""
        async with aclosing(prepare_items(self.state, bodies, params, endpoint)) as outcomes:
            async for position, outcome in outcomes:
                if isinstance(outcome, ApiError):
                    label, prefix, extra = where(position)
                    raise locate(outcome, label, prefix, **extra)

    async def submit_job(self, upload: IO[bytes], params: JobParams) -> JobRecord:
        """Validate a job-API upload completely; only a fully valid one becomes a job."""
        registry, settings = self.registry, self.settings
        job_id = uuid.uuid4().hex[:24]
        path = registry.store.input_path(job_id)
        with _removed_on_error(path):
            await registry.io(copy_limited, upload, path, settings.BATCH_MAX_UPLOAD_BYTES)
            data = await asyncio.to_thread(path.read_bytes)
            bodies = await asyncio.to_thread(parse_job_upload, data, settings.BATCH_MAX_ITEMS)
            await self._check_items(bodies, params, lambda i: (f"item {i}", f"[{i}]", {"index": i}))
            job = self._new_job(job_id, "job", len(bodies), params=asdict(params))
            await registry.add(job)
        log.info("job %s accepted: %d items, %s", job.id, job.total, params.public())
        return job

    async def create_file(self, upload: IO[bytes], filename: str, purpose: str) -> FileRecord:
        """`POST /v1/files`: a batch input, checked to be JSONL now and in depth at batch creation."""
        if purpose != "batch":
            raise InvalidRequest(
                f"purpose {purpose!r} is not supported here; this server accepts 'batch' files",
                param="purpose",
            )
        registry, settings = self.registry, self.settings
        part = registry.store.upload_path()
        with _removed_on_error(part):
            size = await registry.io(copy_limited, upload, part, settings.BATCH_MAX_UPLOAD_BYTES)
            data = await asyncio.to_thread(part.read_bytes)
            await asyncio.to_thread(parse_jsonl, data, settings.BATCH_MAX_ITEMS)
            created = now()
            record = FileRecord(
                id=f"file-{uuid.uuid4().hex[:24]}",
                bytes=size,
                created_at=created,
                filename=os.path.basename(filename or "batch.jsonl")[:255],
                purpose=purpose,
                expires_at=created + self.ttl_seconds,
            )
            await registry.io(registry.store.save_file, record, part)
        registry.files[record.id] = record
        return record

    async def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> JobRecord:
        """`POST /v1/batches`: every line is validated now; an invalid file creates no batch."""
        if endpoint not in BATCH_ENDPOINTS:
            raise InvalidRequest(
                f"endpoint {endpoint!r} is not supported; this server batches "
                f"{' and '.join(BATCH_ENDPOINTS)}",
                param="endpoint",
            )
        if completion_window not in COMPLETION_WINDOWS:
            raise InvalidRequest(
                f"completion_window must be one of {sorted(COMPLETION_WINDOWS)}",
                param="completion_window",
            )
        if metadata is not None and len(metadata) > MAX_METADATA_PAIRS:
            raise InvalidRequest(
                f"metadata holds at most {MAX_METADATA_PAIRS} pairs", param="metadata"
            )
        source = self.get_file(input_file_id, param="input_file_id")
        if source.purpose != "batch":
            raise InvalidRequest(
                f"file {input_file_id} has purpose {source.purpose!r}, not 'batch'",
                param="input_file_id",
            )
        registry = self.registry
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        path = registry.store.input_path(batch_id)
        with _removed_on_error(path):
            try:
                await registry.io(copy_durable, registry.store.file_data_path(source.id), path)
            except FileNotFoundError:  # deleted while we were looking at it
                raise NotFound(
                    f"no file with id '{input_file_id}'",
                    param="input_file_id",
                    code="file_not_found",
                ) from None
            data = await asyncio.to_thread(path.read_bytes)
            lines = await asyncio.to_thread(
                parse_batch_file, data, endpoint, self.settings.BATCH_MAX_ITEMS
            )

            def where(position: int) -> Location:
                number = lines[position][0]
                return f"line {number}", f"line[{number}].body", {"line": number}

            await self._check_items([item.body for _, item in lines], None, where, endpoint)
            job = self._new_job(
                batch_id,
                "batch",
                len(lines),
                input_file_id=source.id,
                endpoint=endpoint,
                completion_window=completion_window,
                metadata=metadata,
            )
            await registry.add(job)
        log.info("batch %s accepted: %d requests from %s", job.id, job.total, source.id)
        return job

    # ---------------------------------------------------------------------- queries

    def get(self, job_id: str, kind: JobKind) -> JobRecord:
        job = self.registry.jobs.get(job_id)
        if job is None or job.kind != kind:
            noun = "job" if kind == "job" else "batch"
            raise JobNotFound(
                f"no {noun} with id '{job_id}'", param="job_id" if kind == "job" else "batch_id"
            )
        return job

    def list_jobs(self, kind: JobKind) -> list[JobRecord]:
        """Newest first."""
        return self.registry.of_kind(kind)

    def get_file(self, file_id: str, param: str = "file_id") -> FileRecord:
        record = self.registry.files.get(file_id)
        if record is None:
            raise NotFound(f"no file with id '{file_id}'", param=param, code="file_not_found")
        return record

    def list_files(self, purpose: str | None = None) -> list[FileRecord]:
        """Newest first."""
        return sorted(
            (f for f in self.registry.files.values() if purpose is None or f.purpose == purpose),
            key=lambda f: -f.created_at,
        )

    def file_content(self, file_id: str) -> Path:
        return self.registry.store.file_data_path(self.get_file(file_id).id)

    async def delete_file(self, file_id: str) -> None:
        record = self.get_file(file_id)
        del self.registry.files[record.id]
        await self.registry.io(self.registry.store.remove_file, record.id)

    async def results(self, job_id: str) -> bytes:
        """The job API's download: a JSON array in input order, one entry per item.

        Available once the job has completed, and for a cancelled job (items that never ran hold
        a `cancelled` error); anything else is a 409 that says why, never an empty file.
        """
        job = self.get(job_id, "job")
        if job.status == "expired":
            raise Conflict(
                f"the results of job {job.id} were removed after the retention period "
                f"({self.settings.BATCH_RESULT_TTL_HOURS:g} h)",
                code="job_expired",
            )
        if job.status == "failed":
            reason = (job.error or {}).get("message", "unknown error")
            raise Conflict(f"job {job.id} failed: {reason}", code="job_failed")
        if job.status not in ("completed", "cancelled"):
            raise Conflict(
                f"job {job.id} is {job.status} ({job.done}/{job.total} items done); results "
                "can be downloaded once it has completed",
                code="job_not_completed",
            )
        entries = await self.registry.io(self.registry.store.read_results, job.id)
        return await asyncio.to_thread(results_array, job, entries)

    # ----------------------------------------------------------------------- cancel

    async def cancel(self, job_id: str, kind: JobKind) -> JobRecord:
        """Stop a job: at once when it waits; after the tokens in flight when it runs."""
        job = self.get(job_id, kind)
        if job.status in ("cancelling", "cancelled"):
            return job
        if job.status in FINISHED:
            raise Conflict(
                f"cannot cancel {job.id}: it is already {job.status}", code="job_finished"
            )
        job.status = "cancelling"
        job.cancelling_at = now()
        if self.worker.interrupt(job.id):
            await self.registry.save(job)  # the worker finalizes it once its rows stop
        else:
            self.registry.claimed.add(job.id)
            try:
                await finalize(self.registry, job, "cancelled")
            finally:
                self.registry.claimed.discard(job.id)
        log.info("%s %s cancelled", job.kind, job.id)
        return job


def manager_of(state: ServerState) -> JobManager:
    """The process's job manager, or 503 while the model (and so the worker) is not ready."""
    manager = state.extras.get("jobs")
    if manager is None:
        state.require_engine()
        raise ServiceUnavailable(
            "the batch worker is starting; retry shortly", headers={"Retry-After": "2"}
        )
    return manager


async def start_batch_worker(app: object, state: ServerState) -> Callable[[], Any]:
    """Lifespan hook (`app` is unused), called once the model is ready; returns the coroutine
    function that stops the worker at shutdown."""
    manager = JobManager(state)
    await manager.start()
    state.extras["jobs"] = manager
    return manager.stop
