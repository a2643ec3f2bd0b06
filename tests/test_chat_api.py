"""The chat service as a user sees it: a real uvicorn process driven by the `openai` SDK.

Runs on the tiny random-weight model (fast, realistic tokenizer); its text is gibberish, so these
tests check protocol behaviour, not prose.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest

MODEL = "tiny-test"
MSG = [{"role": "user", "content": "Say something."}]


def test_health_is_open_and_ready(tiny_server) -> None:
    r = httpx.get(f"{tiny_server.base_url}/health")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_models_list(tiny_server) -> None:
    models = tiny_server.client().models.list()
    ids = [m.id for m in models.data]
    assert ids == ["tiny-test", "tiny-alias"]
    assert models.data[0].object == "model"


def test_auth_required_header_or_query(tiny_server) -> None:
    r = httpx.get(f"{tiny_server.base_url}/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{tiny_server.base_url}/v1/models?token=wrong").status_code == 401
    assert httpx.get(f"{tiny_server.base_url}/v1/models?token=test-token").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        tiny_server.client(api_key="nope").models.list()


def test_request_id_header(tiny_server) -> None:
    with tiny_server.http() as http:
        r = http.get("/v1/models", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert http.get("/v1/models").headers["x-request-id"].startswith("req-")


def test_token_never_logged(tiny_server) -> None:
    httpx.get(f"{tiny_server.base_url}/v1/models?token=test-token")
    log = tiny_server.log_path.read_text()
    assert "token=***" in log
    assert "test-token" not in log


def test_non_streaming_completion(tiny_server) -> None:
    r = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=8, extra_body={"num_beams": 1}
    )
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model_extra.get("constraint", "absent") is None


def test_alias_is_accepted(tiny_server) -> None:
    r = tiny_server.client().chat.completions.create(
        model="tiny-alias", messages=MSG, max_tokens=2, extra_body={"num_beams": 1}
    )
    assert r.model == MODEL


def test_length_finish_reason_and_usage_are_true(tiny_server) -> None:
    r = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=12, extra_body={"num_beams": 1}
    )
    # The random model practically never emits an end token in 12 steps.
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12


def test_streaming_with_usage(tiny_server) -> None:
    stream = tiny_server.client().chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"num_beams": 1},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    full = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=10, extra_body={"num_beams": 1}
    )
    assert text == full.choices[0].message.content


def test_streaming_beam_search_sends_role_then_content(tiny_server) -> None:
    stream = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=6, stream=True, extra_body={"num_beams": 3}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=6, extra_body={"num_beams": 3}
    )
    assert text == full.choices[0].message.content


def test_n_choices_sampling_and_beams(tiny_server) -> None:
    client = tiny_server.client()
    r = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=5, n=2, temperature=1.0, seed=1
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 10
    r = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=5, n=2, extra_body={"num_beams": 3}
    )
    assert len(r.choices) == 2


def test_seed_determinism_even_under_concurrency(tiny_server) -> None:
    client = tiny_server.client()

    def ask(seed: int) -> list[str]:
        r = client.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=12, temperature=1.0, seed=seed, n=2
        )
        return [c.message.content for c in r.choices]

    first = ask(42)
    # Three at once: one running and two queued (the tiny server's queue holds two).
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(ask, [42, 7, 42, 7]))
    assert results[0] == first and results[2] == first
    assert results[1] == results[3]
    assert first != results[1]
    assert first[0] != first[1]  # the two choices draw differently


def test_stop_string_is_not_returned_nor_streamed(tiny_server) -> None:
    client = tiny_server.client()
    base = (
        client.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=16, extra_body={"num_beams": 1}
        )
        .choices[0]
        .message.content
    )
    assert len(base) > 6
    stop = base[3:6]
    r = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=16, stop=[stop], extra_body={"num_beams": 1}
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == base[: base.find(stop)]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=16,
        stop=stop,
        stream=True,
        extra_body={"num_beams": 1},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == base[: base.find(stop)]


def test_penalties_change_the_output(tiny_server) -> None:
    client = tiny_server.client()

    def run(**extra) -> str:
        return (
            client.chat.completions.create(
                model=MODEL,
                messages=MSG,
                max_tokens=16,
                extra_body={"num_beams": 1, **extra.pop("eb", {})},
                **extra,
            )
            .choices[0]
            .message.content
        )

    plain = run()
    assert run(frequency_penalty=2.0) != plain
    assert run(presence_penalty=2.0) != plain
    assert run(eb={"repetition_penalty": 3.0}) != plain


def _generation_lines(server, marker: str) -> list[dict]:
    lines = []
    for line in server.log_path.read_text().splitlines():
        if marker in line and '"path": "/v1/chat/completions"' in line:
            lines.append(json.loads(line.split("access: ", 1)[1]))
    return lines


def test_disconnect_cancels_non_streaming(tiny_server) -> None:
    rid = f"disc-{time.time_ns()}"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{tiny_server.base_url}/v1/chat/completions",
            headers={"Authorization": "Bearer test-token", "x-request-id": rid},
            json={"model": MODEL, "messages": MSG, "max_tokens": 2000, "num_beams": 1},
            timeout=1.0,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _generation_lines(tiny_server, rid):
        time.sleep(0.2)
    (line,) = _generation_lines(tiny_server, rid)
    assert line["outcome"] == "client_disconnected"
    assert line["completion_tokens"] < 2000


def test_disconnect_cancels_streaming(tiny_server) -> None:
    with tiny_server.http() as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MSG,
                "max_tokens": 2000,
                "num_beams": 1,
                "stream": True,
            },
        ) as r:
            for line in r.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break
        t0 = time.monotonic()
        while (
            time.monotonic() - t0 < 10
            and httpx.get(f"{tiny_server.base_url}/health").json()["running"]
        ):
            time.sleep(0.05)
        assert httpx.get(f"{tiny_server.base_url}/health").json()["running"] == 0
        # 2000 tokens would take far longer than this on the tiny model.
        assert time.monotonic() - t0 < 3


def test_overload_gets_429_with_retry_after(tiny_server) -> None:
    body = {"model": MODEL, "messages": MSG, "max_tokens": 400, "num_beams": 1}

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{tiny_server.base_url}/v1/chat/completions",
            headers={"Authorization": "Bearer test-token"},
            json=body,
            timeout=120,
        )

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 3 and 429 in codes
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        client = tiny_server.client()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda _: client.chat.completions.create(
                        model=MODEL, messages=MSG, max_tokens=400, extra_body={"num_beams": 1}
                    ),
                    range(6),
                )
            )


GOOD = {"model": MODEL, "messages": MSG, "max_tokens": 2}

BAD_INPUTS = [
    ("malformed json", b"{not json", 400, None),
    ("missing messages", {"model": MODEL}, 400, "messages"),
    ("empty messages", {**GOOD, "messages": []}, 400, "messages"),
    ("missing model", {"messages": MSG}, 400, "model"),
    (
        "bad role",
        {**GOOD, "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    (
        "content wrong type",
        {**GOOD, "messages": [{"role": "user", "content": 5}]},
        400,
        "messages.0.content",
    ),
    (
        "image part",
        {
            **GOOD,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        },
        400,
        "messages.0.content",
    ),
    ("temperature too high", {**GOOD, "temperature": 2.5}, 400, "temperature"),
    ("temperature negative", {**GOOD, "temperature": -1}, 400, "temperature"),
    ("top_p zero", {**GOOD, "temperature": 1, "top_p": 0}, 400, "top_p"),
    ("n zero", {**GOOD, "n": 0}, 400, "n"),
    ("n too large", {**GOOD, "n": 9, "temperature": 1}, 400, "n"),
    ("n above beams", {**GOOD, "n": 3, "num_beams": 2}, 400, "n"),
    ("max_tokens zero", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens above allowed", {**GOOD, "max_tokens": 100000}, 400, "max_tokens"),
    ("max_tokens not int", {**GOOD, "max_tokens": "many"}, 400, "max_tokens"),
    ("sampling with beams", {**GOOD, "temperature": 0.5, "num_beams": 2}, 400, "num_beams"),
    ("unknown model", {**GOOD, "model": "gpt-9"}, 404, "model"),
    ("unknown field typo", {**GOOD, "vocab_language": "es"}, 400, "vocab_language"),
    (
        "unsupported tools",
        {**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}]},
        400,
        "tools",
    ),
    ("top_logprobs without logprobs", {**GOOD, "top_logprobs": 2}, 400, "top_logprobs"),
    (
        "unknown response_format type",
        {**GOOD, "response_format": {"type": "xml"}},
        400,
        "response_format.type",
    ),
    ("too many stops", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (
        "stream_options without stream",
        {**GOOD, "stream_options": {"include_usage": True}},
        400,
        "stream_options",
    ),
    ("presence penalty range", {**GOOD, "presence_penalty": 3}, 400, "presence_penalty"),
    ("num_beams above max", {**GOOD, "num_beams": 50}, 400, "num_beams"),
    ("body not an object", [1, 2], 400, None),
]


@pytest.mark.parametrize("name,body,status,param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(tiny_server, name, body, status, param) -> None:
    with tiny_server.http() as http:
        if isinstance(body, bytes):
            r = http.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
        else:
            r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    assert err["param"] == param


def test_context_length_exceeded(tiny_server) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        tiny_server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 2000}], max_tokens=2
        )
    assert err.value.code == "context_length_exceeded"
    assert err.value.param == "messages"


def test_body_too_large(tiny_server) -> None:
    with tiny_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={**GOOD, "messages": [{"role": "user", "content": "x" * 70000}]},
        )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
