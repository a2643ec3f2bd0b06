"""Batch jobs: validation at upload, an in-memory registry written through to disk, one worker.

Two front doors share everything below them: the job API (`/v1/batch/jobs`, a JSON array of chat
requests with job-wide generation parameters in the query string) and the OpenAI Batch API
(`/v1/files` + `/v1/batches`, JSONL lines whose bodies keep their own parameters). Both become a
`JobRecord` run by the same worker through the same generation executor.

Why the disk layout looks the way it does (restart safety is the point):

```
BATCH_JOB_DIR/jobs/<id>/job.json       the record; rewritten atomically on every status change
BATCH_JOB_DIR/jobs/<id>/results.jsonl  one line per finished item, appended + fsynced as it ends
BATCH_JOB_DIR/files/<file_id>.json     OpenAI file objects (+ `<file_id>.data`, the content)
BATCH_JOB_TEMP_DIR/<id>.input          the uploaded items, removed once the job is finished
```

The results log is the source of truth for progress: on start-up every unfinished job is
re-queued in submission order and only the indices missing from its log are generated again, so
a crash (even SIGKILL in the middle of an append) neither loses nor duplicates an item. A torn
last line is ignored and cut off before the next append; lines are deduplicated by index.

All registry mutations happen on the event loop; disk writes go through one I/O thread, in order,
so a slow fsync never blocks a request and two writes of one record never overtake each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import completions
from .errors import (
    ApiError,
    Conflict,
    GenerationFailed,
    InvalidRequest,
    JobNotFound,
    NotFound,
    Overloaded,
    RequestTooLarge,
    ServiceUnavailable,
    validation_error,
)
from .protocol import ChatCompletionRequest
from .serving import ServerState
from .settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .engine.params import GenerationJob, GenerationOutput

log = logging.getLogger(__name__)

T = TypeVar("T")

JobKind = Literal["job", "batch"]
JobStatus = Literal[
    "pending", "processing", "cancelling", "completed", "failed", "cancelled", "expired"
]
#: Statuses after which a job never runs again (its results may still be downloaded).
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "expired"})
#: Statuses the worker picks up, oldest submission first.
RUNNABLE: frozenset[str] = frozenset({"pending", "processing"})

#: Item fields that the job API takes from the query string instead (per-item values are ignored).
JOB_WIDE_FIELDS: frozenset[str] = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "num_beams",
        "length_penalty",
        "vocab_lang",
        "vocab_n_words",
    }
)

BATCH_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOWS: frozenset[str] = frozenset({"24h"})
MAX_METADATA_PAIRS = 16


def _now() -> float:
    return time.time()


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


# ------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class JobParams:
    """Job-wide generation parameters of a job-API upload, after defaults and limits.

    `num_beams_explicit` and `length_penalty` (None = not sent) keep what the client actually
    asked for, because the decoding rule treats an explicit value differently from the default:
    a sampling item (temperature > 0) runs with one beam unless the job *asked* for beams.
    """

    max_tokens: int
    num_beams: int
    num_beams_explicit: bool = False
    length_penalty: float | None = None
    vocab_lang: str | None = None
    vocab_n_words: int | None = None
    #: Job-wide phonological constraints (the raw list, validated and compiled at upload).
    constraints: list[dict[str, Any]] | None = None

    @classmethod
    def from_query(
        cls,
        settings: Settings,
        *,
        max_tokens: int | None,
        num_beams: int | None,
        length_penalty: float | None,
        vocab_lang: str | None,
        vocab_n_words: int | None,
    ) -> JobParams:
        """Defaults from the settings; explicit values above the maxima are refused, as on chat.

        A default larger than the server's maximum (e.g. BATCH_DEFAULT_MAX_TOKENS=512 with
        ALLOWED_MAX_NEW_TOKENS=256) is capped rather than turned into an error the client cannot
        fix.
        """
        if max_tokens is not None and max_tokens > settings.ALLOWED_MAX_NEW_TOKENS:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}, above this server's maximum of "
                f"{settings.ALLOWED_MAX_NEW_TOKENS}",
                param="max_tokens",
            )
        if num_beams is not None and num_beams > settings.MAX_NUM_BEAMS:
            raise InvalidRequest(
                f"num_beams must be at most {settings.MAX_NUM_BEAMS}", param="num_beams"
            )
        beams = num_beams or min(settings.BATCH_DEFAULT_NUM_BEAMS, settings.MAX_NUM_BEAMS)
        if length_penalty is not None and beams == 1:
            raise InvalidRequest(
                "length_penalty only applies to beam search (num_beams > 1)",
                param="length_penalty",
            )
        return cls(
            max_tokens=max_tokens
            or min(settings.BATCH_DEFAULT_MAX_TOKENS, settings.ALLOWED_MAX_NEW_TOKENS),
            num_beams=beams,
            num_beams_explicit=num_beams is not None,
            length_penalty=length_penalty,
            vocab_lang=vocab_lang,
            vocab_n_words=vocab_n_words,
        )

    def apply(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        """The item with the job-wide values in place, following the chat decoding rule."""
        update: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "max_completion_tokens": None,
            "vocab_lang": self.vocab_lang,
            "vocab_n_words": self.vocab_n_words,
            "constraints": self.constraints,
        }
        if request.temperature is not None and request.temperature > 0:
            if self.num_beams_explicit and self.num_beams > 1:
                raise InvalidRequest(
                    f"temperature > 0 selects sampling, which does not combine with the job's "
                    f"num_beams={self.num_beams}: set this item's temperature to 0 or upload "
                    "the job without num_beams",
                    param="temperature",
                )
            if self.length_penalty is not None:
                raise InvalidRequest(
                    "temperature > 0 selects sampling, which does not combine with the job's "
                    "length_penalty (beam search only)",
                    param="temperature",
                )
            update.update(num_beams=None, length_penalty=None)
        else:
            update.update(num_beams=self.num_beams, length_penalty=self.length_penalty)
        return request.model_copy(update=update)

    def public(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "num_beams": self.num_beams,
            "length_penalty": 1.0 if self.length_penalty is None else self.length_penalty,
            "vocab_lang": self.vocab_lang,
            "vocab_n_words": self.vocab_n_words,
            "constraints": self.constraints,
        }


async def with_job_constraints(state: ServerState, params: JobParams, raw: str | None) -> JobParams:
    """The one place where job-wide phonological `constraints` are checked at upload.

    `raw` is the JSON text of the `constraints` form field (or query parameter). It is parsed,
    solved and compiled once here, exactly as chat does, so an unknown phoneme, an unsatisfiable
    set or a `max_tokens` that cannot fit the required words is refused before a job exists; the
    compiled grammar then sits in the cache for the worker.
    """
    if raw is None:
        return params
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            "constraints must be a JSON list of constraint objects", param="constraints"
        ) from exc
    await completions.resolve_phonological(
        state, data, params.vocab_lang, params.vocab_n_words, params.max_tokens
    )
    return replace(params, constraints=data)


async def job_params(
    state: ServerState,
    *,
    max_tokens: int | None,
    num_beams: int | None,
    length_penalty: float | None,
    vocab_lang: str | None,
    vocab_n_words: int | None,
    constraints: str | None,
) -> JobParams:
    """Every check of the job-wide query parameters, before the file is even read."""
    params = JobParams.from_query(
        state.settings,
        max_tokens=max_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        vocab_lang=vocab_lang,
        vocab_n_words=vocab_n_words,
    )
    if constraints is None:
        await completions.resolve_wordlist(state, vocab_lang, vocab_n_words)
    return await with_job_constraints(state, params, constraints)


@contextmanager
def _located(label: str, param_prefix: str, **extra: Any) -> Iterator[None]:
    """Prefix an error raised while checking one item with where that item is in the upload."""
    try:
        yield
    except ApiError as exc:
        exc.message = f"{label}: {exc.message}"
        exc.param = f"{param_prefix}.{exc.param}" if exc.param else param_prefix
        exc.extra.update(extra)
        raise


async def prepare_item(
    state: ServerState, body: Any, params: JobParams | None
) -> completions.PreparedChat:
    """One chat request of a batch, checked exactly as chat checks it (plus the batch rules).

    `params` is the job API's job-wide override (its fields in the item are ignored); OpenAI
    batch lines pass None and keep their own parameters.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("must be a JSON object (a chat completion request)")
    if params is not None:
        if body.get("constraints") is not None:
            # Like the vocabulary, phonological constraints are job-wide in the job API (see
            # `with_job_constraints`); OpenAI batch lines keep theirs (params is None).
            raise InvalidRequest(
                "in a job, phonological constraints are job-wide: send them as the "
                "`constraints` form field (or query parameter), not per item",
                param="constraints",
            )
        body = {k: v for k, v in body.items() if k not in JOB_WIDE_FIELDS}
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    if request.stream:
        raise InvalidRequest("stream is not available in a batch", param="stream")
    if params is not None:
        request = params.apply(request)
    return await completions.prepare_chat(state, request)


# -------------------------------------------------------------------------------------- records


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
        self.done += 1
        if "error" in entry:
            self.failed += 1
        usage = (entry.get("response") or {}).get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))


@dataclass
class FileRecord:
    """An OpenAI file object: a batch input the client uploaded, or an output we wrote."""

    id: str
    bytes: int
    created_at: float
    filename: str
    purpose: str
    expires_at: float | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": _ts(self.expires_at),
        }


@dataclass
class BatchItem:
    """One input item as the worker runs it: its position, its request body, its custom_id."""

    index: int
    body: Any
    custom_id: str | None = None


# ---------------------------------------------------------------------------------------- disk


def _fsync_dir(path: Path) -> None:
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Readers (and a restart) see the old content or the new one, never a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """The results log as {index: entry}: first line per index wins, a torn last line is ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    out: dict[int, dict[str, Any]] = {}
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the last piece has no newline: incomplete
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("%s:%d: unreadable result line skipped", path, number)
            continue
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, int) and index not in out:
            out[index] = entry
    return out


def copy_limited(src: IO[bytes], dest: Path, limit: int) -> int:
    """Copy an upload to `dest`, refusing (413) as soon as it exceeds `limit` bytes."""
    size = 0
    try:
        with open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(
                        f"the uploaded file is larger than the limit of {limit} bytes",
                        param="file",
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return size


def copy_durable(src: Path, dest: Path) -> None:
    """A copy that survives a crash once this returns (the job record is written after it)."""
    with open(src, "rb") as f:
        copy_limited(f, dest, limit=1 << 62)


class JobStore:
    """The on-disk side of the registry. Blocking; called from the manager's I/O thread."""

    def __init__(self, job_dir: Path, temp_dir: Path) -> None:
        self.jobs_dir = job_dir / "jobs"
        self.files_dir = job_dir / "files"
        self.temp_dir = temp_dir

    def ensure(self) -> None:
        for d in (self.jobs_dir, self.files_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)

    # paths
    def record_path(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / "job.json"

    def results_path(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / "results.jsonl"

    def input_path(self, job_id: str) -> Path:
        return self.temp_dir / f"{job_id}.input"

    def upload_path(self) -> Path:
        """Where a `/v1/files` upload lands first: beside its final place, so the rename that
        publishes it is atomic even when the temp dir is on another filesystem."""
        return self.files_dir / f".upload-{uuid.uuid4().hex}.part"

    def file_meta_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.json"

    def file_data_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.data"

    # records
    def save_record(self, job_id: str, data: bytes) -> None:
        path = self.record_path(job_id)
        fresh = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            _fsync_dir(self.jobs_dir)
        write_atomic(path, data)

    def load_records(self) -> list[JobRecord]:
        records = []
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            try:
                records.append(JobRecord.from_dict(json.loads(path.read_bytes())))
            except (OSError, ValueError, TypeError) as exc:
                log.error("skipping unreadable job record %s: %s", path, exc)
        return records

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
        self.input_path(job_id).unlink(missing_ok=True)

    # results
    def repair_tail(self, job_id: str) -> None:
        """Cut a torn last line (a crash mid-append) so the next append starts on a fresh line."""
        path = self.results_path(job_id)
        try:
            with open(path, "rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
                    f.flush()
                    os.fsync(f.fileno())
        except FileNotFoundError:
            pass

    def append_result(self, job_id: str, line: bytes) -> None:
        path = self.results_path(job_id)
        fresh = not path.exists()
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if fresh:
            _fsync_dir(path.parent)

    def remove_results(self, job_id: str) -> None:
        self.results_path(job_id).unlink(missing_ok=True)

    # files
    def save_file(
        self, record: FileRecord, data_from: Path | None = None, data: bytes = b""
    ) -> None:
        target = self.file_data_path(record.id)
        if data_from is not None:
            os.replace(data_from, target)
            _fsync_dir(target.parent)
        else:
            write_atomic(target, data)
        write_atomic(self.file_meta_path(record.id), json.dumps(asdict(record)).encode())

    def load_files(self) -> list[FileRecord]:
        out = []
        for path in sorted(self.files_dir.glob("*.json")):
            try:
                record = FileRecord(**json.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError) as exc:
                log.error("skipping unreadable file record %s: %s", path, exc)
                continue
            if self.file_data_path(record.id).exists():
                out.append(record)
        return out

    def remove_file(self, file_id: str) -> None:
        self.file_meta_path(file_id).unlink(missing_ok=True)
        self.file_data_path(file_id).unlink(missing_ok=True)

    def clean_temp(self, keep: set[str]) -> None:
        """Remove uploads nobody will process: inputs of finished jobs, interrupted uploads.

        Only our own file names are touched, in case the temp dir is shared with others.
        """
        stale = [p for p in self.temp_dir.glob("*.input") if p.stem not in keep]
        stale += list(self.files_dir.glob(".upload-*.part"))
        for path in stale:
            log.info("removing stale upload %s", path.name)
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- parsing


def parse_job_upload(data: bytes, max_items: int) -> list[Any]:
    """The job API's file: a non-empty JSON array of at most `max_items` requests."""
    try:
        items = json.loads(data)
    except ValueError as exc:
        raise InvalidRequest(
            f"the uploaded file is not valid JSON: {exc}", param="file", code="invalid_json"
        ) from None
    if not isinstance(items, list):
        raise InvalidRequest(
            "the uploaded file must be a JSON array of chat completion requests", param="file"
        )
    if not items:
        raise InvalidRequest("the uploaded file holds no requests (empty array)", param="file")
    if len(items) > max_items:
        raise InvalidRequest(
            f"the uploaded file holds {len(items)} requests; at most {max_items} are allowed "
            "per job (BATCH_MAX_ITEMS)",
            param="file",
        )
    return items


def parse_jsonl(data: bytes, max_items: int) -> list[tuple[int, Any]]:
    """(line number, value) for every non-blank line of a JSONL file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the file is not UTF-8 text", param="file") from None
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except ValueError as exc:
            raise InvalidRequest(
                f"line {number}: not valid JSON: {exc}",
                param="file",
                code="invalid_json",
                extra={"line": number},
            ) from None
    if not out:
        raise InvalidRequest("the file holds no requests", param="file")
    if len(out) > max_items:
        raise InvalidRequest(
            f"the file holds {len(out)} requests; at most {max_items} are allowed per batch "
            "(BATCH_MAX_ITEMS)",
            param="file",
        )
    return out


def parse_batch_lines(lines: list[tuple[int, Any]], endpoint: str) -> list[BatchItem]:
    """OpenAI batch input lines -> items; structure and duplicate custom_ids are refused here."""
    seen: dict[str, int] = {}
    items = []
    for index, (number, line) in enumerate(lines):
        with _located(f"line {number}", f"line[{number}]", line=number):
            if not isinstance(line, dict):
                raise InvalidRequest("each line must be a JSON object")
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                raise InvalidRequest("custom_id must be a non-empty string", param="custom_id")
            if custom_id in seen:
                raise InvalidRequest(
                    f"duplicate custom_id {custom_id!r} (first used on line {seen[custom_id]}); "
                    "custom_ids must be unique within a batch",
                    param="custom_id",
                    code="duplicate_custom_id",
                )
            seen[custom_id] = number
            if line.get("method", "POST") != "POST":
                raise InvalidRequest("method must be POST", param="method")
            if line.get("url") != endpoint:
                raise InvalidRequest(f"url must be the batch's endpoint {endpoint!r}", param="url")
            if not isinstance(line.get("body"), dict):
                raise InvalidRequest("body must be a JSON object", param="body")
        items.append(BatchItem(index=index, body=line["body"], custom_id=custom_id))
    return items


def load_items(kind: JobKind, data: bytes) -> list[BatchItem]:
    """A stored input (already validated at upload) back into items, for the worker."""
    if kind == "job":
        return [BatchItem(index=i, body=body) for i, body in enumerate(json.loads(data))]
    lines = [
        (n, json.loads(line))
        for n, line in enumerate(data.decode("utf-8-sig").splitlines(), 1)
        if line.strip()
    ]
    return parse_batch_lines(lines, BATCH_ENDPOINT)


# ------------------------------------------------------------------------------------ manager


class JobManager:
    """The registry, the worker loop and the retention sweep of one batch process."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.settings = state.settings
        self.store = JobStore(self.settings.BATCH_JOB_DIR, self.settings.BATCH_JOB_TEMP_DIR)
        self.jobs: dict[str, JobRecord] = {}
        self.files: dict[str, FileRecord] = {}
        self._seq = 0
        self._io_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-io")
        self._wake = asyncio.Event()
        #: Jobs the worker or a cancel request is handling right now (the worker skips them).
        self._claimed: set[str] = set()
        self._current: str | None = None
        self._inflight: list[GenerationJob] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def ttl_seconds(self) -> float:
        return self.settings.BATCH_RESULT_TTL_HOURS * 3600

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    async def _save(self, job: JobRecord) -> None:
        await self._io(self.store.save_record, job.id, json.dumps(asdict(job)).encode())

    # ------------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Reload the registry from disk and start the worker and the retention sweep."""
        await self._io(self.store.ensure)
        records = await self._io(self.store.load_records)
        for job in records:
            if job.status not in FINISHED:
                # The results log, not the record, says how far an unfinished job got.
                entries = await self._io(read_results, self.store.results_path(job.id))
                job.done = job.failed = job.prompt_tokens = job.completion_tokens = 0
                for entry in entries.values():
                    if 0 <= entry["index"] < job.total:
                        job.count(entry)
            self.jobs[job.id] = job
        for record in await self._io(self.store.load_files):
            self.files[record.id] = record
        self._seq = max((job.seq for job in records), default=0)
        keep = {job.id for job in self.jobs.values() if job.status not in FINISHED}
        await self._io(self.store.clean_temp, keep)
        queued = sorted(
            (j for j in self.jobs.values() if j.status in RUNNABLE), key=lambda j: j.seq
        )
        if queued:
            log.info("resuming %d unfinished batch jobs: %s", len(queued), [j.id for j in queued])
        for job in [j for j in self.jobs.values() if j.status == "cancelling"]:
            await self._finalize(job, "cancelled")
        self.sweep(_now())
        self._spawn(self._worker())
        self._spawn(self._sweeper())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """SIGTERM: abandon the batch in flight (redone on the next start) and stop at once."""
        self._stopping = True
        for job in self._inflight:
            job.cancel.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._io_pool.shutdown, wait=True)
        log.info("batch worker stopped")

    # ------------------------------------------------------------------- submission

    def _new_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _model_id(self) -> str:
        return self.state.require_engine().model_id

    async def _register(self, job: JobRecord) -> None:
        await self._save(job)
        self.jobs[job.id] = job
        self._wake.set()

    async def submit_job(self, upload: IO[bytes], params: JobParams) -> JobRecord:
        """Validate a job-API upload completely; only a fully valid one becomes a job."""
        job_id = uuid.uuid4().hex[:24]
        path = self.store.input_path(job_id)
        limit = self.settings.BATCH_MAX_UPLOAD_BYTES
        try:
            await self._io(copy_limited, upload, path, limit)
            data = await asyncio.to_thread(path.read_bytes)
            raw_items = await asyncio.to_thread(
                parse_job_upload, data, self.settings.BATCH_MAX_ITEMS
            )
            for index, body in enumerate(raw_items):
                with _located(f"item {index}", f"[{index}]", index=index):
                    await prepare_item(self.state, body, params)
            job = JobRecord(
                id=job_id,
                kind="job",
                seq=self._new_seq(),
                status="pending",
                total=len(raw_items),
                submitted_at=_now(),
                model=self._model_id(),
                params=asdict(params),
            )
            await self._register(job)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        log.info("job %s accepted: %d items, %s", job.id, job.total, params.public())
        return job

    async def create_file(self, upload: IO[bytes], filename: str, purpose: str) -> FileRecord:
        """`POST /v1/files`: a batch input, checked to be JSONL now and in depth at batch creation."""
        if purpose != "batch":
            raise InvalidRequest(
                f"purpose {purpose!r} is not supported here; this server accepts 'batch' files",
                param="purpose",
            )
        part = self.store.upload_path()
        try:
            size = await self._io(copy_limited, upload, part, self.settings.BATCH_MAX_UPLOAD_BYTES)
            data = await asyncio.to_thread(part.read_bytes)
            await asyncio.to_thread(parse_jsonl, data, self.settings.BATCH_MAX_ITEMS)
            created = _now()
            record = FileRecord(
                id=f"file-{uuid.uuid4().hex[:24]}",
                bytes=size,
                created_at=created,
                filename=os.path.basename(filename or "batch.jsonl")[:255],
                purpose=purpose,
                expires_at=created + self.ttl_seconds,
            )
            await self._io(self.store.save_file, record, part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        self.files[record.id] = record
        return record

    async def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> JobRecord:
        """`POST /v1/batches`: every line is validated now; an invalid file creates no batch."""
        if endpoint != BATCH_ENDPOINT:
            raise InvalidRequest(
                f"endpoint {endpoint!r} is not supported; this server batches {BATCH_ENDPOINT}",
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
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        path = self.store.input_path(batch_id)
        try:
            try:
                await self._io(copy_durable, self.store.file_data_path(source.id), path)
            except FileNotFoundError:  # deleted while we were looking at it
                raise NotFound(
                    f"no file with id '{input_file_id}'",
                    param="input_file_id",
                    code="file_not_found",
                ) from None
            data = await asyncio.to_thread(path.read_bytes)
            lines = await asyncio.to_thread(parse_jsonl, data, self.settings.BATCH_MAX_ITEMS)
            items = parse_batch_lines(lines, endpoint)
            for item, (number, _) in zip(items, lines, strict=True):
                with _located(f"line {number}", f"line[{number}].body", line=number):
                    await prepare_item(self.state, item.body, None)
            job = JobRecord(
                id=batch_id,
                kind="batch",
                seq=self._new_seq(),
                status="pending",
                total=len(items),
                submitted_at=_now(),
                model=self._model_id(),
                input_file_id=source.id,
                endpoint=endpoint,
                completion_window=completion_window,
                metadata=metadata,
            )
            await self._register(job)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        log.info("batch %s accepted: %d requests from %s", job.id, job.total, source.id)
        return job

    # ---------------------------------------------------------------------- queries

    def get(self, job_id: str, kind: JobKind) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind:
            noun = "job" if kind == "job" else "batch"
            raise JobNotFound(
                f"no {noun} with id '{job_id}'", param="job_id" if kind == "job" else "batch_id"
            )
        return job

    def list_jobs(self, kind: JobKind) -> list[JobRecord]:
        """Newest first."""
        return sorted((j for j in self.jobs.values() if j.kind == kind), key=lambda j: -j.seq)

    def get_file(self, file_id: str, param: str = "file_id") -> FileRecord:
        record = self.files.get(file_id)
        if record is None:
            raise NotFound(f"no file with id '{file_id}'", param=param, code="file_not_found")
        return record

    def list_files(self, purpose: str | None = None) -> list[FileRecord]:
        return sorted(
            (f for f in self.files.values() if purpose is None or f.purpose == purpose),
            key=lambda f: -f.created_at,
        )

    def file_content(self, file_id: str) -> Path:
        return self.store.file_data_path(self.get_file(file_id).id)

    async def delete_file(self, file_id: str) -> None:
        record = self.get_file(file_id)
        del self.files[record.id]
        await self._io(self.store.remove_file, record.id)

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
        entries = await self._io(read_results, self.store.results_path(job.id))
        return await asyncio.to_thread(_results_array, job, entries)

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
        job.cancelling_at = _now()
        if job.id == self._current:
            for gen in self._inflight:
                gen.cancel.set()
            await self._save(job)
        else:
            self._claimed.add(job.id)
            try:
                await self._finalize(job, "cancelled")
            finally:
                self._claimed.discard(job.id)
        log.info("%s %s cancelled", job.kind, job.id)
        return job

    # ----------------------------------------------------------------------- worker

    def _next_job(self) -> JobRecord | None:
        runnable = [
            j for j in self.jobs.values() if j.status in RUNNABLE and j.id not in self._claimed
        ]
        return min(runnable, key=lambda j: j.seq, default=None)

    async def _worker(self) -> None:
        """Jobs one at a time in submission order, until stopped."""
        while not self._stopping:
            job = self._next_job()
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._current = job.id
            self._claimed.add(job.id)
            try:
                await self._process(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s %s failed in the worker", job.kind, job.id)
                await self._finalize(
                    job, "failed", {"code": "internal_error", "message": "see the server log"}
                )
            finally:
                self._current = None
                self._claimed.discard(job.id)
                self._inflight = []

    async def _process(self, job: JobRecord) -> None:
        try:
            data = await self._io(self.store.input_path(job.id).read_bytes)
            items = load_items(job.kind, data)
        except (OSError, ValueError, ApiError) as exc:
            log.error("%s %s: its input cannot be read: %s", job.kind, job.id, exc)
            await self._finalize(
                job, "failed", {"code": "input_unavailable", "message": "the stored input is gone"}
            )
            return
        await self._io(self.store.repair_tail, job.id)
        entries = await self._io(read_results, self.store.results_path(job.id))
        if job.status == "pending":
            job.status = "processing"
            job.started_at = _now()
            await self._save(job)
        params = job.job_params()
        remaining = [item for item in items if item.index not in entries]
        prepared: list[tuple[BatchItem, completions.PreparedChat]] = []
        for item in remaining:
            try:
                prepared.append((item, await prepare_item(self.state, item.body, params)))
            except ApiError as exc:  # e.g. a word list removed since the upload
                await self._record(job, item, error=exc.body()["error"])
        for chunk in self._chunks(prepared):
            if job.status == "cancelling" or self._stopping:
                break
            await self._run_chunk(job, chunk)
        if job.status == "cancelling":
            await self._finalize(job, "cancelled")
        elif not self._stopping:
            await self._finalize(job, "completed")

    def _chunks(
        self, prepared: list[tuple[BatchItem, completions.PreparedChat]]
    ) -> Iterator[list[tuple[BatchItem, completions.PreparedChat]]]:
        """Items with one batch key (compatible decoding settings), at most pipeline-size each."""
        size = self.settings.BATCH_JOB_PIPELINE_SIZE
        groups: dict[tuple[Any, ...], list[tuple[BatchItem, completions.PreparedChat]]] = {}
        for pair in prepared:
            groups.setdefault(pair[1].params.batch_key(), []).append(pair)
        for group in groups.values():
            for start in range(0, len(group), size):
                yield group[start : start + size]

    async def _generate(self, gen_jobs: list[GenerationJob]) -> list[GenerationOutput]:
        """One `engine.generate` call in the shared executor, holding a limiter slot.

        The limiter is shared with chat when both run in one process; its 429 is for HTTP clients,
        so the worker waits for a slot instead. Shielded: a shutdown abandons the batch by setting
        the cancel flags, and the slot is released only when the thread has really finished.
        """
        engine = self.state.require_engine()
        assert self.state.limiter is not None
        self._inflight = gen_jobs  # from here on, a cancel request reaches these jobs
        try:
            while True:
                try:
                    await self.state.limiter.acquire()
                    break
                except Overloaded:
                    await asyncio.sleep(0.2)
            future = self.state.submit(engine, gen_jobs)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                for gen in gen_jobs:
                    gen.cancel.set()
                raise
        finally:
            self._inflight = []

    async def _run_chunk(
        self, job: JobRecord, chunk: list[tuple[BatchItem, completions.PreparedChat]]
    ) -> None:
        try:
            outputs = await self._generate([prepared.job() for _, prepared in chunk])
        except asyncio.CancelledError:
            raise
        except Exception:
            if len(chunk) > 1:
                log.exception(
                    "%s %s: a batch of %d failed; retrying its items one by one",
                    job.kind,
                    job.id,
                    len(chunk),
                )
                for pair in chunk:
                    await self._run_chunk(job, [pair])
                return
            log.exception("%s %s: item %d failed", job.kind, job.id, chunk[0][0].index)
            error = GenerationFailed("generation failed; see the server log").body()["error"]
            await self._record(job, chunk[0][0], error=error)
            return
        for (item, prepared), output in zip(chunk, outputs, strict=True):
            if any(c.finish_reason == "cancelled" for c in output.choices):
                continue  # cut short by a cancel or shutdown: not a result, never recorded
            failures = [
                c.error or "constraint error" for c in output.choices if c.finish_reason == "error"
            ]
            if failures:
                error = GenerationFailed(f"generation failed: {failures[0]}").body()["error"]
                await self._record(job, item, error=error)
                continue
            completion = completions.build_completion(
                prepared, output, f"chatcmpl-batch-{job.id}-{item.index}"
            )
            await self._record(job, item, response=completion.model_dump())

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
        await self._io(self.store.append_result, job.id, line)
        job.count(entry)

    async def _finalize(
        self, job: JobRecord, status: JobStatus, error: dict[str, Any] | None = None
    ) -> None:
        """Make a job terminal: OpenAI output files first, then the record, then drop the input."""
        if job.kind == "batch" and status != "failed":
            job.finalizing_at = _now()
            await self._write_batch_files(job)
        job.status = job.outcome = status
        job.error = error
        job.finished_at = _now()
        await self._save(job)
        await self._io(self.store.input_path(job.id).unlink, True)
        log.info(
            "%s %s %s: %d/%d items, %d failed",
            job.kind,
            job.id,
            status,
            job.done,
            job.total,
            job.failed,
        )

    async def _write_batch_files(self, job: JobRecord) -> None:
        entries = await self._io(read_results, self.store.results_path(job.id))
        try:
            data = await self._io(self.store.input_path(job.id).read_bytes)
            custom_ids = {item.index: item.custom_id for item in load_items("batch", data)}
        except (OSError, ValueError, ApiError):
            custom_ids = {i: e.get("custom_id") for i, e in entries.items()}
        output, errors = _batch_output_lines(job, entries, custom_ids)
        created = _now()
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
            await self._io(self.store.save_file, record, None, b"".join(lines))
            self.files[record.id] = record
            setattr(job, purpose_id, record.id)

    # -------------------------------------------------------------------- retention

    async def _sweeper(self) -> None:
        interval = min(60.0, max(1.0, self.ttl_seconds / 20))
        while True:
            await asyncio.sleep(interval)
            self.sweep(_now())

    def sweep(self, now: float) -> None:
        """Retention: finished jobs expire `BATCH_RESULT_TTL_HOURS` after they finished (their
        results and output files are removed, the record says `expired`); the record itself goes
        one more period later. Uploaded input files go the same period after their upload."""
        ttl = self.ttl_seconds
        for job in list(self.jobs.values()):
            if job.id in self._claimed:
                continue
            if job.status in FINISHED - {"expired"} and (job.finished_at or now) + ttl <= now:
                job.status = "expired"
                job.expired_at = now
                for file_id in (job.output_file_id, job.error_file_id):
                    if file_id and self.files.pop(file_id, None) is not None:
                        self._spawn(self._io(self.store.remove_file, file_id))
                self._spawn(self._io(self.store.remove_results, job.id))
                self._spawn(self._save(job))
                log.info("%s %s expired", job.kind, job.id)
            elif job.status == "expired" and (job.expired_at or now) + ttl <= now:
                del self.jobs[job.id]
                self._spawn(self._io(self.store.remove_job, job.id))
        for record in list(self.files.values()):
            if record.expires_at is not None and record.expires_at <= now:
                del self.files[record.id]
                self._spawn(self._io(self.store.remove_file, record.id))

    # -------------------------------------------------------------------------- views

    def job_view(self, job: JobRecord) -> dict[str, Any]:
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
            "expires_at": _ts(job.finished_at + self.ttl_seconds)
            if job.finished_at and job.status != "expired"
            else None,
            "error": job.error,
            "completed": job.done,
            "failed": job.failed,
            "total": job.total,
            "progress": round(job.done / job.total, 4) if job.total else 1.0,
            "params": params.public() if params else None,
            "usage": _usage(job),
        }

    def batch_view(self, job: JobRecord) -> dict[str, Any]:
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
            "expires_at": _ts(job.finished_at + self.ttl_seconds) if job.finished_at else None,
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


def _usage(job: JobRecord) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.prompt_tokens + job.completion_tokens,
    }


def _results_array(job: JobRecord, entries: dict[int, dict[str, Any]]) -> bytes:
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


def _batch_output_lines(
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
        elif "error" in entry:
            status = 500 if entry["error"].get("type") == "server_error" else 400
            line.update(
                response={
                    "status_code": status,
                    "request_id": f"req_{job.id}_{index}",
                    "body": {"error": entry["error"]},
                },
                error=None,
            )
        else:
            line.update(
                response={
                    "status_code": 200,
                    "request_id": f"req_{job.id}_{index}",
                    "body": entry["response"],
                },
                error=None,
            )
            target = output
        target.append(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return output, errors


def manager_of(state: ServerState) -> JobManager:
    """The process's job manager, or 503 while the model (and so the worker) is not ready."""
    manager = state.extras.get("jobs")
    if manager is None:
        state.require_engine()
        raise ServiceUnavailable(
            "the batch worker is starting; retry shortly", headers={"Retry-After": "2"}
        )
    return manager


async def start_batch_worker(app: FastAPI, state: ServerState) -> Callable[[], Any]:
    """Lifespan hook, called once the model is ready; returns the coroutine function that stops
    the worker at shutdown."""
    manager = JobManager(state)
    await manager.start()
    state.extras["jobs"] = manager
    return manager.stop


class BatchCreateRequest(BaseModel):
    """`POST /v1/batches`. Fields newer SDKs add (e.g. `output_expires_after`) are accepted and
    ignored, so an SDK upgrade does not break clients."""

    model_config = ConfigDict(extra="allow")

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


def page(
    items: list[Any], key: Callable[[Any], str], after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """OpenAI cursor pagination: the `limit` items following the one whose id is `after`."""
    if after is not None:
        ids = [key(item) for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit
