"""Making a job terminal, and the documents a finished job is read through.

The job API's download is one JSON array in input order (`results_array`); an OpenAI batch gets
an output file and an error file (`batch_output_lines`), written once when it finishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..errors import ApiError
from .records import FileRecord, JobRecord, JobStatus, now
from .registry import Registry
from .uploads import BATCH_ENDPOINT, load_items

log = logging.getLogger(__name__)


async def finalize(
    registry: Registry, job: JobRecord, status: JobStatus, error: dict[str, Any] | None = None
) -> None:
    """OpenAI output files first, then the terminal record, then the stored input goes."""
    if job.kind == "batch" and status != "failed":
        job.finalizing_at = now()
        await _write_batch_files(registry, job)
    job.status = job.outcome = status
    job.error = error
    job.finished_at = now()
    await registry.save(job)
    await registry.io(registry.store.remove_input, job.id)
    log.info(
        "%s %s %s: %d/%d items, %d failed",
        job.kind,
        job.id,
        status,
        job.done,
        job.total,
        job.failed,
    )


async def _write_batch_files(registry: Registry, job: JobRecord) -> None:
    store = registry.store
    entries = await registry.io(store.read_results, job.id)
    try:
        data = await registry.io(store.read_input, job.id)
        items = await asyncio.to_thread(
            load_items, "batch", data, job.endpoint or BATCH_ENDPOINT
        )
        custom_ids = {item.index: item.custom_id for item in items}
    except (OSError, ValueError, ApiError):
        custom_ids = {i: e.get("custom_id") for i, e in entries.items()}
    output, errors = batch_output_lines(job, entries, custom_ids)
    created = now()
    for name, lines, purpose_id in (
        ("output", output, "output_file_id"),
        ("error", errors, "error_file_id"),
    ):
        if not lines:
            continue
        record = FileRecord(
            id=f"file-{job.id.removeprefix('batch_')}-{name}",
            bytes=sum(len(line) for line in lines),
            created_at=created,
            filename=f"{job.id}_{name}.jsonl",
            purpose="batch_output",
        )
        await registry.io(store.save_file, record, None, b"".join(lines))
        registry.files[record.id] = record
        setattr(job, purpose_id, record.id)


def results_array(job: JobRecord, entries: dict[int, dict[str, Any]]) -> bytes:
    """The job API's download: a completion or an error object per item, in input order."""
    out = []
    for index in range(job.total):
        entry = entries.get(index)
        if entry is not None and "response" in entry:
            out.append(entry["response"])
            continue
        error = (
            entry["error"]
            if entry is not None
            else {
                "message": "the job was cancelled before this item ran",
                "type": "invalid_request_error",
                "param": None,
                "code": "cancelled",
            }
        )
        out.append({"id": f"chatcmpl-batch-{job.id}-{index}", "object": "error", "error": error})
    return json.dumps(out, ensure_ascii=False).encode()


def batch_output_lines(
    job: JobRecord, entries: dict[int, dict[str, Any]], custom_ids: dict[int, str | None]
) -> tuple[list[bytes], list[bytes]]:
    """OpenAI's output and error files, in input order.

    A request that failed while running is an HTTP-style failure (`response.status_code` >= 400,
    `error` null); one that never ran because the batch was cancelled has `response` null and an
    `error`, as OpenAI reports it.
    """
    output: list[bytes] = []
    errors: list[bytes] = []
    for index in range(job.total):
        entry = entries.get(index)
        line: dict[str, Any] = {
            "id": f"batch_req_{job.id.removeprefix('batch_')}_{index}",
            "custom_id": custom_ids.get(index),
        }
        target = errors
        if entry is None:
            line.update(
                response=None,
                error={
                    "code": "batch_cancelled",
                    "message": "the batch was cancelled before this request ran",
                },
            )
        else:
            failed = "error" in entry
            status = 200
            if failed:
                status = 500 if entry["error"].get("type") == "server_error" else 400
            else:
                target = output
            line.update(
                response={
                    "status_code": status,
                    "request_id": f"req_{job.id}_{index}",
                    "body": {"error": entry["error"]} if failed else entry["response"],
                },
                error=None,
            )
        target.append(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return output, errors
