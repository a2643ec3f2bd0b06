"""The chat app around a fake engine: auth, middleware, limiter, streaming slots, stops,
penalties, constraint reports; in-process, no model."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest
from fakes import AUTH, TOKEN, FakeEngine

MODEL = "fake-model"


def chat(**kw) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}
    body.update(kw)
    return body


def sse_events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


# ------------------------------------------------------------------------------------ auth


def test_health_is_open_and_v1_needs_the_token(make_client):
    client, _ = make_client()
    assert client.get("/health").status_code == 200
    missing = client.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert "Missing bearer token" in missing.json()["error"]["message"]
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Incorrect API key provided."
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert client.get(f"/v1/models?token={TOKEN}").status_code == 200
    assert client.get("/v1/models", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


# ------------------------------------------------------------------------------ middleware


def test_request_id_is_kept_or_assigned_and_logged_once_without_the_token(make_client, caplog):
    client, _ = make_client()
    caplog.set_level(logging.INFO, logger="wordlist_generation.access")
    r = client.get("/v1/models", headers={"x-request-id": "abc-123", **AUTH})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/v1/models", headers={"x-request-id": "bad id with spaces", **AUTH})
    assert r.headers["x-request-id"].startswith("req-")
    caplog.clear()
    client.get(f"/v1/models?token={TOKEN}&x=1")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert len(lines) == 1
    assert lines[0]["query"] == "token=***&x=1"
    assert TOKEN not in caplog.text


def test_body_over_the_limit_is_413_before_parsing(make_client):
    client, _ = make_client()
    big = chat(messages=[{"role": "user", "content": "x" * 5000}])
    r = client.post("/v1/chat/completions", json=big, headers=AUTH)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------------- limiter


def test_limiter_queues_then_refuses_with_retry_after_and_frees_every_slot(make_client):
    client, engine = make_client()  # 1 running, 1 waiting
    engine.gate.clear()
    results: dict[str, int] = {}

    def post(name: str) -> None:
        results[name] = client.post("/v1/chat/completions", json=chat(), headers=AUTH).status_code

    first = threading.Thread(target=post, args=("first",))
    first.start()
    assert engine.started.wait(10)
    second = threading.Thread(target=post, args=("second",))
    second.start()
    deadline = time.monotonic() + 10
    while client.get("/health").json().get("waiting") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    health = client.get("/health").json()
    assert (health["running"], health["waiting"]) == (1, 1)
    third = client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert third.status_code == 429
    assert third.headers["retry-after"]
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    engine.gate.set()
    first.join(10)
    second.join(10)
    assert results == {"first": 200, "second": 200}
    health = client.get("/health").json()
    assert (health["running"], health["waiting"]) == (0, 0)


def test_a_stream_abandoned_before_it_starts_gives_its_slot_back(make_client):
    """The client leaves after the slot was taken but before the body is first iterated: the
    generator never runs, and the slot must still come back."""
    client, engine = make_client()
    app = client.app
    state = app.state.server
    body = json.dumps(chat(stream=True)).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }

    async def run() -> list[dict]:
        sent = iter([{"type": "http.request", "body": body, "more_body": False}])
        messages: list[dict] = []

        async def receive() -> dict:
            return next(sent, {"type": "http.disconnect"})

        async def send(message: dict) -> None:
            messages.append(message)
            if message["type"] == "http.response.start":
                await asyncio.sleep(0.2)  # the disconnect is noticed meanwhile

        await app(scope, receive, send)
        await asyncio.sleep(0.1)
        return messages

    messages = client.portal.call(run)
    assert messages[0]["status"] == 200
    assert engine.submitted == []  # the generation never started
    assert state.limiter.running == 0
    assert client.post("/v1/chat/completions", json=chat(), headers=AUTH).status_code == 200


def test_a_finished_or_disconnected_stream_releases_its_slot(smollm_tokenizer, make_client):
    client, _ = make_client(FakeEngine(smollm_tokenizer, token_seconds=0.01))
    with client.stream("POST", "/v1/chat/completions", json=chat(stream=True), headers=AUTH) as r:
        for line in r.iter_lines():
            if "Hello" in line:
                break
    deadline = time.monotonic() + 10
    while client.app.state.server.limiter.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.app.state.server.limiter.running == 0
    r = client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
    assert r.text.rstrip().endswith("data: [DONE]")
    assert client.app.state.server.limiter.running == 0


# ------------------------------------------------------------------------------------ stops


def test_stop_strings_end_json_and_stream_answers_and_never_leak(smollm_tokenizer, make_client):
    engine = FakeEngine(smollm_tokenizer, "The cat sat. STOP and more text")
    client, _ = make_client(engine)
    r = client.post("/v1/chat/completions", json=chat(stop=["STOP"]), headers=AUTH)
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "The cat sat. "
    assert choice["finish_reason"] == "stop"
    r = client.post("/v1/chat/completions", json=chat(stop="STOP", stream=True), headers=AUTH)
    events = sse_events(r.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "The cat sat. "
    assert "STOP" not in r.text
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"


def test_max_tokens_cuts_with_length(smollm_tokenizer, make_client):
    client, _ = make_client(FakeEngine(smollm_tokenizer, "one two three four five six seven"))
    r = client.post("/v1/chat/completions", json=chat(max_tokens=3), headers=AUTH).json()
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 3


# -------------------------------------------------------------------------------- penalties


def test_penalties_reach_the_engine_and_constrained_requests_default_repetition(make_client):
    client, engine = make_client()
    ok = client.post(
        "/v1/chat/completions",
        json=chat(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.1),
        headers=AUTH,
    )
    assert ok.status_code == 200
    p = engine.submitted[-1].params
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.5, 0.25, 1.1)
    settings = client.app.state.server.settings
    r = client.post(
        "/v1/chat/completions", json=chat(vocab_lang="en", vocab_n_words=200), headers=AUTH
    ).json()
    assert engine.submitted[-1].params.repetition_penalty == settings.CONSTRAINED_REPETITION_PENALTY
    assert r["constraint"]["repetition_penalty"] == settings.CONSTRAINED_REPETITION_PENALTY
    client.post(
        "/v1/chat/completions",
        json=chat(vocab_lang="en", vocab_n_words=200, repetition_penalty=1.0),
        headers=AUTH,
    )
    assert engine.submitted[-1].params.repetition_penalty == 1.0


@pytest.mark.parametrize(
    ("field", "value"), [("presence_penalty", 2.5), ("frequency_penalty", -3), ("repetition_penalty", 0)]
)
def test_out_of_range_penalties_are_400_naming_the_field(make_client, field, value):
    client, engine = make_client()
    r = client.post("/v1/chat/completions", json=chat(**{field: value}), headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == field
    assert engine.submitted == []


# ----------------------------------------------------------------------- constraint report


def test_the_independent_recheck_reports_words_outside_the_list(smollm_tokenizer, make_client):
    # The fake engine does not mask: what it says goes straight to the re-check.
    client, _ = make_client(FakeEngine(smollm_tokenizer, "The zyzzyva is here."))
    r = client.post(
        "/v1/chat/completions", json=chat(vocab_lang="en", vocab_n_words=500), headers=AUTH
    ).json()
    c = r["constraint"]
    assert c["vocab_lang"] == "en" and c["vocab_n_words"] == 500
    assert c["compliant"] is False
    assert any("zyzzyva" in v for v in c["violations"])
    assert r["choices"][0]["message"]["content"] == "The zyzzyva is here."


def test_unknown_language_and_size_are_400s_naming_the_field(make_client):
    client, _ = make_client()
    r = client.post(
        "/v1/chat/completions", json=chat(vocab_lang="xx", vocab_n_words=5), headers=AUTH
    )
    assert r.status_code == 404 and r.json()["error"]["param"] == "vocab_lang"
    r = client.post(
        "/v1/chat/completions", json=chat(vocab_lang="en", vocab_n_words=10**9), headers=AUTH
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "vocab_n_words"
    r = client.post("/v1/chat/completions", json=chat(vocab_lang="en"), headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "vocab_n_words"
