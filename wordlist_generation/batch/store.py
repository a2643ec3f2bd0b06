"""The on-disk side of the registry, and the durable-write helpers it is made of. Blocking.

Restart safety is the point of this layout:

```
BATCH_JOB_DIR/jobs/<id>/job.json       the record; rewritten atomically on every status change
BATCH_JOB_DIR/jobs/<id>/results.jsonl  one line per finished item, appended + fsynced as it ends
BATCH_JOB_DIR/files/<file_id>.json     OpenAI file objects (+ `<file_id>.data`, the content)
BATCH_JOB_TEMP_DIR/<id>.input          the uploaded items, removed once the job is finished
```

The results log is the source of truth for progress: on start-up only the indices missing from a
job's log are generated again, so a crash (even SIGKILL in the middle of an append) neither loses
nor duplicates an item. A torn last line is ignored and cut off before the next append; lines are
deduplicated by index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ..errors import RequestTooLarge
from .records import FileRecord, JobRecord

log = logging.getLogger(__name__)


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
    """Paths and blocking reads/writes; the registry calls it from its one I/O thread."""

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

    # inputs
    def read_input(self, job_id: str) -> bytes:
        return self.input_path(job_id).read_bytes()

    def remove_input(self, job_id: str) -> None:
        self.input_path(job_id).unlink(missing_ok=True)

    # results
    def read_results(self, job_id: str) -> dict[int, dict[str, Any]]:
        return read_results(self.results_path(job_id))

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
