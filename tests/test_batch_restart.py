"""Restart safety: SIGKILL and SIGTERM in the middle of a job, with real processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from wordlist_generation.batch import JobStore, read_results

MODEL = "tiny-test"


# ------------------------------------------------------------------ the results log (no model)


def test_results_log_ignores_a_torn_line_and_duplicates(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(
        b'{"index": 0, "response": {"a": 1}}\n'
        b"\n"
        b'{"index": 1, "error": {"code": "x"}}\n'
        b'{"index": 0, "response": {"a": 2}}\n'
        b'{"index": 2, "resp'
    )
    entries = read_results(path)
    assert sorted(entries) == [0, 1]
    assert entries[0]["response"] == {"a": 1}
    assert read_results(tmp_path / "missing.jsonl") == {}


def test_repair_cuts_the_torn_tail_before_appending(tmp_path: Path):
    store = JobStore(tmp_path / "jobs", tmp_path / "uploads")
    store.ensure()
    (store.jobs_dir / "j").mkdir()
    store.results_path("j").write_bytes(b'{"index": 0}\n{"index": 1, "resp')
    store.repair_tail("j")
    store.append_result("j", b'{"index": 1}\n')
    assert store.results_path("j").read_bytes() == b'{"index": 0}\n{"index": 1}\n'
    assert sorted(read_results(store.results_path("j"))) == [0, 1]


# ------------------------------------------------------------------------ real processes


def item(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def submit(http: httpx.Client, n: int, max_tokens: int) -> str:
    r = http.post(
        "/v1/batch/jobs",
        params={
            "max_tokens": max_tokens,
            "num_beams": 1,
            "vocab_lang": "en",
            "vocab_n_words": 3000,
        },
        files={"file": ("items.json", json.dumps([item(f"tale {i}") for i in range(n)]))},
    )
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def status(http: httpx.Client, job_id: str) -> dict[str, Any]:
    r = http.get(f"/v1/batch/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(http: httpx.Client, job_id: str, ok, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = status(http, job_id)
        if ok(s):
            return s
        assert s["status"] in {"pending", "processing"}, s
        time.sleep(0.02)
    raise AssertionError(f"condition not met for {job_id}: {s}")


def mid_job(s: dict[str, Any]) -> bool:
    return 0 < s["completed"] < s["total"]


def finished(s: dict[str, Any]) -> bool:
    return s["status"] == "completed"


def check_exactly_once(http: httpx.Client, store: JobStore, job_id: str, total: int) -> None:
    results = http.get(f"/v1/batch/jobs/{job_id}/results").json()
    assert [r["id"] for r in results] == [f"chatcmpl-batch-{job_id}-{i}" for i in range(total)]
    assert all(r["object"] == "chat.completion" for r in results), results
    lines = [json.loads(x) for x in store.results_path(job_id).read_bytes().splitlines()]
    assert sorted(line["index"] for line in lines) == list(range(total)), "lost or duplicated"
    assert not store.input_path(job_id).exists(), "the upload outlived its job"


@pytest.mark.slow
def test_kill_and_restart_mid_job(tiny_model_dir: Path, tmp_path: Path, server_logs: Path):
    from server_process import ServerProcess

    env = {
        "MODEL_NAME": str(tiny_model_dir),
        "SERVED_MODEL_ID": MODEL,
        "ALLOWED_MAX_NEW_TOKENS": "256",
        "DEFAULT_MAX_NEW_TOKENS": "16",
        "BATCH_JOB_DIR": str(tmp_path / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp_path / "uploads"),
        "BATCH_JOB_PIPELINE_SIZE": "2",
    }
    store = JobStore(tmp_path / "jobs", tmp_path / "uploads")
    log = server_logs / "batch-restart.log"

    def start() -> ServerProcess:
        return ServerProcess("wordlist_generation.app_batch:app", env, log).start()

    total = 16
    server = start()
    try:
        with server.http() as http:
            small = submit(http, 2, 4)
            wait_until(http, small, finished)
            job = submit(http, total, 48)
            before = wait_until(http, job, mid_job)
        server.stop(signal.SIGKILL)
        assert server.proc.returncode == -signal.SIGKILL
        on_disk = len(read_results(store.results_path(job)))
        assert before["completed"] <= on_disk < total

        server = start()
        with server.http() as http:
            assert status(http, small)["status"] == "completed"
            assert len(http.get(f"/v1/batch/jobs/{small}/results").json()) == 2
            resumed = status(http, job)
            assert resumed["completed"] >= on_disk and resumed["status"] != "failed"
            wait_until(http, job, finished)
            check_exactly_once(http, store, job, total)
            check_exactly_once(http, store, small, 2)

            # SIGTERM: the worker stops at once, abandoning the batch in flight.
            job2 = submit(http, total, 48)
            wait_until(http, job2, mid_job)
        t0 = time.monotonic()
        server.stop(signal.SIGTERM)
        assert time.monotonic() - t0 < 8, "graceful shutdown waited for the job"
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert server.proc.returncode in (0, -signal.SIGTERM)
        assert "batch worker stopped" in server.log_tail(200)

        server = start()
        with server.http() as http:
            wait_until(http, job2, finished)
            check_exactly_once(http, store, job2, total)
    finally:
        server.stop()
