"""Retention: finished jobs expire `BATCH_RESULT_TTL_HOURS` after they finished (their results and
output files are removed, the record says `expired`); the record itself goes one more period
later. Uploaded input files go the same period after their upload."""

from __future__ import annotations

import asyncio
import logging

from .records import FINISHED, now
from .registry import Registry

log = logging.getLogger(__name__)


def sweep(registry: Registry, at: float, ttl: float) -> None:
    """One pass at time `at`; the disk work is queued on the registry's I/O thread."""
    store = registry.store
    for job in list(registry.jobs.values()):
        if job.id in registry.claimed:
            continue
        if job.status in FINISHED - {"expired"} and (job.finished_at or at) + ttl <= at:
            job.status = "expired"
            job.expired_at = at
            for file_id in (job.output_file_id, job.error_file_id):
                if file_id and registry.files.pop(file_id, None) is not None:
                    registry.spawn(registry.io(store.remove_file, file_id))
            registry.spawn(registry.io(store.remove_results, job.id))
            registry.spawn(registry.save(job))
            log.info("%s %s expired", job.kind, job.id)
        elif job.status == "expired" and (job.expired_at or at) + ttl <= at:
            del registry.jobs[job.id]
            registry.spawn(registry.io(store.remove_job, job.id))
    for record in list(registry.files.values()):
        if record.expires_at is not None and record.expires_at <= at:
            del registry.files[record.id]
            registry.spawn(registry.io(store.remove_file, record.id))


async def sweeper(registry: Registry, ttl: float) -> None:
    """`sweep` about twenty times per retention period (at least every second, at most every
    minute), until cancelled."""
    interval = min(60.0, max(1.0, ttl / 20))
    while True:
        await asyncio.sleep(interval)
        sweep(registry, now(), ttl)
