"""What the registry holds: jobs, OpenAI file objects, and the items the worker runs.

A `JobRecord` is written to `job.json` as it is (`dataclasses.asdict`), so a field added here
needs a default: records written by an older version are read back with `from_dict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Literal

from .params import JobParams

JobKind = Literal["job", "batch"]
JobStatus = Literal[
    "pending", "processing", "cancelling", "completed", "failed", "cancelled", "expired"
]
#: Statuses after which a job never runs again (its results may still be downloaded).
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "expired"})
#: Statuses the worker picks up, oldest submission first.
RUNNABLE: frozenset[str] = frozenset({"pending", "processing"})


def now() -> float:
    return time.time()


@dataclass
class JobRecord:
    """Everything the registry knows about one job; `job.json` is this, as JSON."""

    id: str
    kind: JobKind
    seq: int
    status: JobStatus
    total: int
    submitted_at: float
    model: str
    started_at: float | None = None
    finished_at: float | None = None
    cancelling_at: float | None = None
    finalizing_at: float | None = None
    expired_at: float | None = None
    #: The terminal status a job reached (kept when it later expires).
    outcome: str | None = None
    error: dict[str, Any] | None = None
    #: Items recorded in the results log (success or per-item error) and those with an error.
    done: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    params: dict[str, Any] | None = None
    # OpenAI Batch API fields (kind "batch")
    input_file_id: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    metadata: dict[str, str] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def job_params(self) -> JobParams | None:
        return JobParams(**self.params) if self.params is not None else None

    def count(self, entry: dict[str, Any]) -> None:
        """Add one entry of the results log to the progress and usage counters."""
        self.done += 1
        if "error" in entry:
            self.failed += 1
        usage = (entry.get("response") or {}).get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))

    def recount(self, entries: dict[int, dict[str, Any]]) -> None:
        """Progress from the results log alone (the log, not the record, is the truth)."""
        self.done = self.failed = self.prompt_tokens = self.completion_tokens = 0
        for entry in entries.values():
            if 0 <= entry["index"] < self.total:
                self.count(entry)


@dataclass
class FileRecord:
    """An OpenAI file object: a batch input the client uploaded, or an output we wrote."""

    id: str
    bytes: int
    created_at: float
    filename: str
    purpose: str
    expires_at: float | None = None


@dataclass
class BatchItem:
    """One input item as the worker runs it: its position, its request body, its custom_id."""

    index: int
    body: Any
    custom_id: str | None = None
