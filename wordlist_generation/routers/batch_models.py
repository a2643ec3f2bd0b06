"""HTTP shapes of the batch routes: the `POST /v1/batches` body, the job API's status object,
OpenAI's Batch and File objects, and OpenAI's cursor-paginated lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..batch import FileRecord, JobRecord
from ..protocol.screen import screen


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


class BatchCreateRequest(BaseModel):
    """`POST /v1/batches`. Fields newer SDKs add (e.g. `output_expires_after`) are accepted and
    ignored, so an SDK upgrade does not break clients."""

    model_config = ConfigDict(extra="allow", strict=True)

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: Any) -> Any:
        screen(data)
        return data

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


def job_accepted(job: JobRecord) -> dict[str, Any]:
    """The answer to a job upload."""
    return {
        "job_id": job.id,
        "status": job.status,
        "message": f"job accepted: {job.total} items queued; poll /v1/batch/jobs/{job.id}",
        "completed": 0,
        "total": job.total,
    }


def job_view(job: JobRecord, ttl_seconds: float) -> dict[str, Any]:
    """The job API's status object (with what a progress bar needs)."""
    params = job.job_params()
    return {
        "object": "batch.job",
        "job_id": job.id,
        "status": job.status,
        "model": job.model,
        "submitted_at": _ts(job.submitted_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "expires_at": _ts(job.finished_at + ttl_seconds)
        if job.finished_at and job.status != "expired"
        else None,
        "error": job.error,
        "completed": job.done,
        "failed": job.failed,
        "total": job.total,
        "progress": round(job.done / job.total, 4) if job.total else 1.0,
        "params": params.public() if params else None,
        "usage": {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": job.prompt_tokens + job.completion_tokens,
        },
    }


def batch_view(job: JobRecord, ttl_seconds: float) -> dict[str, Any]:
    """OpenAI's Batch object."""
    status = {
        "pending": "validating",
        "processing": "finalizing" if job.finalizing_at else "in_progress",
    }.get(job.status, job.status)
    finished = _ts(job.finished_at)
    errors = None
    if job.error:
        errors = {"object": "list", "data": [{**job.error, "param": None, "line": None}]}
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "model": job.model,
        "errors": errors,
        "input_file_id": job.input_file_id,
        "completion_window": job.completion_window,
        "status": status,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "created_at": _ts(job.submitted_at),
        "in_progress_at": _ts(job.started_at),
        "expires_at": _ts(job.finished_at + ttl_seconds) if job.finished_at else None,
        "finalizing_at": _ts(job.finalizing_at),
        "completed_at": finished if job.outcome == "completed" else None,
        "failed_at": finished if job.outcome == "failed" else None,
        "expired_at": _ts(job.expired_at),
        "cancelling_at": _ts(job.cancelling_at),
        "cancelled_at": finished if job.outcome == "cancelled" else None,
        "request_counts": {
            "total": job.total,
            "completed": job.done - job.failed,
            "failed": job.failed,
        },
        "metadata": job.metadata,
        "usage": {
            "input_tokens": job.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": job.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": job.prompt_tokens + job.completion_tokens,
        },
    }


def file_view(record: FileRecord) -> dict[str, Any]:
    """OpenAI's File object."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": _ts(record.expires_at),
    }


def page(
    items: list[Any], key: Callable[[Any], str], after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """OpenAI cursor pagination: the `limit` items following the one whose id is `after`."""
    if after is not None:
        ids = [key(item) for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit


def list_page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """OpenAI's cursor-paginated list object."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


# ------------------------------------------------------------- documented response shapes
# What `job_accepted`, `job_view`, `batch_view`, `file_view` and `list_page` build, as models for
# the OpenAPI document (the handlers return the dicts; schemathesis checks the two agree).

Timestamp = int | None


class JobAccepted(BaseModel):
    job_id: str
    status: str
    message: str
    completed: int
    total: int


class JobUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class JobObject(BaseModel):
    object: Literal["batch.job"]
    job_id: str
    status: str
    model: str
    submitted_at: Timestamp
    started_at: Timestamp
    finished_at: Timestamp
    expires_at: Timestamp
    error: dict[str, Any] | None
    completed: int
    failed: int
    total: int
    progress: float
    params: dict[str, Any] | None
    usage: JobUsage


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobObject]


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"]
    endpoint: str | None
    model: str
    errors: dict[str, Any] | None
    input_file_id: str | None
    completion_window: str | None
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: Timestamp
    in_progress_at: Timestamp
    expires_at: Timestamp
    finalizing_at: Timestamp
    completed_at: Timestamp
    failed_at: Timestamp
    expired_at: Timestamp
    cancelling_at: Timestamp
    cancelled_at: Timestamp
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None
    usage: dict[str, Any]


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: None
    expires_at: Timestamp


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class _Page(BaseModel):
    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class BatchList(_Page):
    data: list[BatchObject]


class FileList(_Page):
    data: list[FileObject]
