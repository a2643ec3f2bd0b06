"""OpenAI's Batch API (`/v1/files`, `/v1/batches`) through the `openai` SDK, plus retention."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from wordcheck import violations

from wordlist_generation.batch import FileRecord, JobManager, JobRecord
from wordlist_generation.routers.batch_models import batch_view
from wordlist_generation.services.state import ServerState
from wordlist_generation.settings import Settings

MODEL = "tiny-test"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory, server_logs: Path):
    from server_process import ServerProcess

    tmp = tmp_path_factory.mktemp("openai-batches")
    env = {
        "MODEL_NAME": str(tiny_model_dir),
        "SERVED_MODEL_ID": MODEL,
        "MODEL_ALIASES": "tiny-alias",
        "DEFAULT_NUM_BEAMS": "2",
        "ALLOWED_MAX_NEW_TOKENS": "64",
        "DEFAULT_MAX_NEW_TOKENS": "16",
        "MAX_INPUT_TOKENS": "256",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
        "BATCH_JOB_PIPELINE_SIZE": "4",
        "BATCH_MAX_ITEMS": "50",
    }
    server = ServerProcess(
        "wordlist_generation.app_batch:app", env, server_logs / "openai-batches.log"
    ).start()
    yield server
    server.stop()


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return server.client()


def line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def upload(client: openai.OpenAI, lines: list[Any], name: str = "requests.jsonl"):
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def wait_batch(client: openai.OpenAI, batch_id: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in {"completed", "failed", "expired", "cancelled"}:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} not finished: {batch}")


def test_round_trip_through_the_sdk(client):
    lines = [
        line("greedy", "Say something about rivers.", max_tokens=8, num_beams=1),
        line("words", "Describe a house.", max_tokens=10, vocab_lang="en", vocab_n_words=300),
        line("sampled", "Hello!", max_tokens=6, temperature=0.8, seed=7, n=2),
        line("beams", "A poem, please.", max_completion_tokens=6, num_beams=2, length_penalty=0.5),
        line("alias", "Hi", model="tiny-alias", max_tokens=3, num_beams=1),
        line(
            "sounds",
            "Say hi.",
            max_tokens=8,
            num_beams=1,
            constraints=[{"type": "include", "phonemes": ["s"], "position": "initial"}],
        ),
    ]
    source = upload(client, lines)
    assert (source.object, source.purpose, source.filename) == ("file", "batch", "requests.jsonl")
    assert source.bytes == len(jsonl(lines))
    assert client.files.retrieve(source.id).id == source.id

    batch = client.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"purpose": "test"},
    )
    assert batch.object == "batch" and batch.status in {"validating", "in_progress"}
    assert batch.request_counts.total == 6 and batch.metadata == {"purpose": "test"}
    batch = wait_batch(client, batch.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 0)
    assert batch.error_file_id is None and batch.output_file_id
    assert batch.completed_at >= batch.in_progress_at >= batch.created_at
    assert batch.usage.output_tokens > 0

    raw = client.files.content(batch.output_file_id).content
    output = raw.decode().splitlines()
    results = [json.loads(x) for x in output]
    assert [r["custom_id"] for r in results] == [x["custom_id"] for x in lines]
    assert len({r["id"] for r in results}) == 6
    by_id = {}
    for r in results:
        assert r["error"] is None and r["response"]["status_code"] == 200
        body = r["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["usage"]["completion_tokens"] > 0
        by_id[r["custom_id"]] = body
    assert len(by_id["sampled"]["choices"]) == 2
    assert by_id["greedy"]["usage"]["completion_tokens"] <= 8
    words = by_id["words"]
    assert words["constraint"]["violations"] == []
    assert violations(words["choices"][0]["message"]["content"], "en", 300) == []
    assert by_id["greedy"]["constraint"] is None
    sounds = by_id["sounds"]["constraint"]  # per-line phonological constraints
    assert sounds["mode"] == "phonological" and sounds["compliant"] is True

    meta = client.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output" and meta.bytes == len(raw)
    assert batch.id in [b.id for b in client.batches.list()]
    assert client.batches.list(limit=1).data[0].id == batch.id  # newest first

    assert client.files.delete(source.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(source.id)
    # The batch ran from its own copy: deleting the input changes nothing for it.
    assert client.batches.retrieve(batch.id).status == "completed"


def count_batches(client: openai.OpenAI) -> int:
    return len(client.batches.list(limit=100).data)


@pytest.mark.parametrize(
    ("lines", "param", "line_no"),
    [
        ([line("a", "x"), line("b", "y"), line("a", "z")], "line[3].custom_id", 3),
        ([line("a", "x"), {**line("b", "y"), "url": "/v1/embeddings"}], "line[2].url", 2),
        (
            [line("a", "x"), {"method": "POST", "url": "/v1/chat/completions", "body": {}}],
            "line[2].custom_id",
            2,
        ),
        ([line("a", "x", temperature=0.5, num_beams=3)], "line[1].body.num_beams", 1),
        ([line("a", "x", vocab_lang="zz", vocab_n_words=3)], "line[1].body.vocab_lang", 1),
        ([line("a", "x", model="gpt-4o")], "line[1].body.model", 1),
        ([["not", "an", "object"]], "line[1]", 1),
    ],
)
def test_invalid_lines_are_refused_at_creation(client, lines, param, line_no):
    source = upload(client, lines)
    before = count_batches(client)
    with pytest.raises(openai.APIStatusError) as info:
        client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert info.value.status_code in {400, 404}
    error = info.value.body
    assert error["param"] == param and error["line"] == line_no, error
    assert error["message"].startswith(f"line {line_no}:")
    if param.endswith("custom_id") and line_no == 3:
        assert error["code"] == "duplicate_custom_id"
    assert count_batches(client) == before


def test_request_level_errors(client):
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", io.BytesIO(b"{broken\n")), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        client.files.create(
            file=("x.jsonl", io.BytesIO(jsonl([line("a", "x")]))), purpose="fine-tune"
        )
    source = upload(client, [line("a", "x")])
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert info.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )
    assert info.value.body["param"] == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")


def test_cancel(client):
    lines = [line(f"r{i}", f"story number {i}", max_tokens=64, num_beams=2) for i in range(24)]
    source = upload(client, lines)
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in {"cancelling", "cancelled"} and cancelled.cancelling_at
    batch = wait_batch(client, batch.id, timeout=30)
    assert batch.status == "cancelled" and batch.cancelled_at
    counts = batch.request_counts
    assert counts.total == 24 and counts.completed < 24
    assert batch.error_file_id
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    done = []
    if batch.output_file_id:
        done = client.files.content(batch.output_file_id).text.splitlines()
    assert len(done) + len(errors) == 24 and len(done) == counts.completed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(wait_batch(client, _quick_batch(client)).id)


def _quick_batch(client: openai.OpenAI) -> str:
    source = upload(client, [line("q", "hi", max_tokens=2, num_beams=1)])
    return client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


# ------------------------------------------------------------------- retention (no model)


def test_retention_expires_results_then_records(tmp_path: Path):
    """Finished jobs expire after BATCH_RESULT_TTL_HOURS; the record goes one period later."""
    settings = Settings(
        BATCH_JOB_DIR=tmp_path / "jobs",
        BATCH_JOB_TEMP_DIR=tmp_path / "uploads",
        BATCH_RESULT_TTL_HOURS=1,
    )

    async def scenario() -> None:
        manager = JobManager(ServerState(settings=settings))
        registry = manager.registry
        registry.store.ensure()
        t0 = time.time()
        out = FileRecord(
            id="file-abc-output", bytes=3, created_at=t0, filename="o.jsonl", purpose="batch_output"
        )
        registry.store.save_file(out, data=b"{}\n")
        registry.files[out.id] = out
        upload_ = FileRecord(
            id="file-in",
            bytes=3,
            created_at=t0,
            filename="in.jsonl",
            purpose="batch",
            expires_at=t0 + 3600,
        )
        registry.store.save_file(upload_, data=b"{}\n")
        registry.files[upload_.id] = upload_
        job = JobRecord(
            id="batch_abc",
            kind="batch",
            seq=1,
            status="completed",
            outcome="completed",
            total=1,
            done=1,
            submitted_at=t0,
            started_at=t0,
            finished_at=t0,
            model=MODEL,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            input_file_id="file-in",
            output_file_id=out.id,
        )
        registry.jobs[job.id] = job
        registry.store.save_record(job.id, json.dumps(job.__dict__).encode())
        registry.store.append_result(job.id, b'{"index": 0, "response": {}}\n')

        manager.sweep(t0 + 1800)
        assert job.status == "completed"
        assert batch_view(job, manager.ttl_seconds)["expires_at"] == int(t0 + 3600)

        manager.sweep(t0 + 3601)
        await asyncio.gather(*registry.tasks)
        view = batch_view(job, manager.ttl_seconds)
        assert view["status"] == "expired" and view["expired_at"] == int(t0 + 3601)
        assert view["completed_at"] == int(t0) and view["request_counts"]["completed"] == 1
        assert "file-abc-output" not in registry.files and "file-in" not in registry.files
        assert not registry.store.file_data_path(out.id).exists()
        assert not registry.store.results_path(job.id).exists()
        saved = json.loads(registry.store.record_path(job.id).read_bytes())
        assert saved["status"] == "expired"  # a restart still knows

        manager.sweep(t0 + 3601 + 3600)
        await asyncio.gather(*registry.tasks)
        assert job.id not in registry.jobs
        assert not registry.store.record_path(job.id).exists()

    asyncio.run(scenario())
