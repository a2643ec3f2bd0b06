"""`logprobs` / `top_logprobs` in chat completions, JSON and streamed, in every decoding mode.

On the real tiny server through the `openai` SDK: the shapes, the bytes (checked against
llguidance's own token bytes), the values against a plain transformers forward pass over the prompt
and the generated ids (recovered from each entry's bytes) and against `POST /v1/score`. In-process
with the fake engine: the request rules, how streamed chunks carry their tokens, choices and drafts.
The engine's synchronous step path (`HFEngine.generate`) is held to the scheduler's.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import AUTH, FakeEngine

from wordlist_generation.engine.hf import HFEngine
from wordlist_generation.engine.loader import load_model
from wordlist_generation.engine.logprobs import TokenPieces
from wordlist_generation.engine.params import GenerationJob, SamplingParams, TokenLogprob
from wordlist_generation.services.chat import choice_logprobs

MODEL = "tiny-test"
MSG = [{"role": "user", "content": "Cuéntame algo."}]
#: Exactly OpenAI's parameters for each decoding mode of this server (see "Decoding rule").
MODES: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0, "extra_body": {"num_beams": 1}},
    "sample": {"temperature": 1, "seed": 7},
    "beam": {"temperature": 0, "extra_body": {"num_beams": 2}},
}
#: Everything that would move the decoded distribution away from the model's own, off.
PLAIN = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def _no_constant(name: str) -> float:
    raise AssertionError(f"{name} in the JSON")


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """The tiny model with plain transformers, the chat prompt's ids, and every token's bytes
    from llguidance (which shares no code with the server's `TokenPieces`) mapped to its id."""
    import llguidance.hf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    ll = llguidance.hf.from_tokenizer(tok)
    ids_of = {ll.decode_bytes([i]): i for i in range(ll.vocab_size)}
    prompt = list(
        tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    return model, prompt, ids_of


def model_logprobs(reference, ids: list[int], temperature: float = 1.0) -> list[float]:
    """Log-probability of each of `ids` after the chat prompt and the ids before it."""
    model, prompt, _ = reference
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist()


def create(server, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """(the SDK's parsed completion, the raw JSON body parsed with NaN/Infinity refused)."""
    raw = server.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=MSG, logprobs=True, **kwargs
    )
    return raw.parse(), json.loads(raw.http_response.text, parse_constant=_no_constant)


def entry_ids(reference, content: list[Any]) -> list[int]:
    return [reference[2][bytes(e.bytes)] for e in content]


def check_entries(content: list[Any], k: int, *, greedy: bool) -> None:
    for e in content:
        assert e.token == bytes(e.bytes).decode("utf-8", errors="backslashreplace")
        assert math.isfinite(e.logprob) and e.logprob <= 1e-6
        assert math.isfinite(e.model_extra["logprob_unconstrained"])
        top = [t.logprob for t in e.top_logprobs]
        assert len(top) == k and top == sorted(top, reverse=True)
        for t in e.top_logprobs:
            assert t.token == bytes(t.bytes).decode("utf-8", errors="backslashreplace")
            if t.bytes == e.bytes:
                assert t.logprob == pytest.approx(e.logprob, abs=1e-5)
        assert e.logprob <= top[0] + 1e-5
        if greedy:  # the argmax leads the alternatives
            assert e.top_logprobs[0].bytes == e.bytes


@pytest.mark.parametrize("mode", list(MODES))
def test_json_and_stream_logprobs_are_well_formed(tiny_server, mode) -> None:
    params = {"max_tokens": 10, "top_logprobs": 3, **MODES[mode]}
    completion, body = create(tiny_server, **params)
    [choice] = completion.choices
    content = choice.logprobs.content
    assert content and set(body["choices"][0]["logprobs"]) == {"content", "refusal"}
    check_entries(content, 3, greedy=mode == "greedy")
    assert b"".join(bytes(e.bytes) for e in content) == choice.message.content.encode()

    stream = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, logprobs=True, stream=True, **params
    )
    streamed: list[Any] = []
    text = ""
    for chunk in stream:
        for c in chunk.choices:
            entries = c.logprobs.content if c.logprobs is not None else []
            if c.delta.content:  # each chunk's tokens are the bytes of its text
                assert b"".join(bytes(e.bytes) for e in entries) == c.delta.content.encode()
            text += c.delta.content or ""
            streamed += entries
    assert text == choice.message.content
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in content]
    for a, b in zip(streamed, content, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert [t.bytes for t in a.top_logprobs] == [t.bytes for t in b.top_logprobs]


def test_unconstrained_values_are_the_models_own(tiny_server, reference) -> None:
    """Temperature 1 and no penalties: decoded = unconstrained = a plain forward pass over the
    prompt and the generated ids, and = `/v1/score` wherever re-encoding the text gives the same
    ids (from the first token up to where it first differs)."""
    completion, _ = create(
        tiny_server, max_tokens=12, top_logprobs=1, temperature=1, seed=11, extra_body=PLAIN
    )
    [choice] = completion.choices
    content = choice.logprobs.content
    ids = entry_ids(reference, content)
    decoded = [e.logprob for e in content]
    raw = [e.model_extra["logprob_unconstrained"] for e in content]
    assert sum(decoded) == pytest.approx(sum(raw), rel=1e-3)
    assert raw == pytest.approx(model_logprobs(reference, ids), abs=1e-4)
    assert decoded == pytest.approx(raw, abs=1e-4)

    with tiny_server.http() as http:
        r = http.post(
            "/v1/score",
            json={"model": MODEL, "text": choice.message.content, "messages": MSG,
                  "detail": "per_token"},
        )
    assert r.status_code == 200, r.text
    scored = r.json()["data"][0]["per_token"]
    same = 0
    while same < min(len(ids), len(scored)) and scored[same]["id"] == ids[same]:
        same += 1
    assert same >= 1
    assert [t["logprob"] for t in scored[:same]] == pytest.approx(raw[:same], abs=1e-4)


def test_a_vocabulary_renormalises_the_decoded_logprobs(tiny_server, reference) -> None:
    """Under the mask a token is more likely than under the model, whose own value is still the
    plain forward pass's; streamed (text held back to word boundaries), the same tokens come."""
    params: dict[str, Any] = {
        "max_tokens": 12,
        "top_logprobs": 5,
        "temperature": 1,
        "seed": 5,
        "extra_body": {"vocab_lang": "es", "vocab_n_words": 1000, "vocab_prompt_hint": False,
                       **PLAIN},
    }
    completion, body = create(tiny_server, **params)
    [choice] = completion.choices
    assert body["constraint"]["compliant"]
    content = choice.logprobs.content
    assert content
    raw = [e.model_extra["logprob_unconstrained"] for e in content]
    assert raw == pytest.approx(model_logprobs(reference, entry_ids(reference, content)), abs=1e-4)
    for e, r in zip(content, raw, strict=True):
        assert e.logprob >= r - 1e-5
        assert all(math.isfinite(t.logprob) for t in e.top_logprobs)
    assert sum(e.logprob for e in content) > sum(raw) + 1.0  # the mask removed mass
    stream = tiny_server.client().chat.completions.create(
        model=MODEL, messages=MSG, logprobs=True, stream=True, **params
    )
    chunks = [c for chunk in stream for c in chunk.choices]
    assert "".join(c.delta.content or "" for c in chunks) == choice.message.content
    streamed = [e for c in chunks if c.logprobs is not None for e in c.logprobs.content]
    assert [e.bytes for e in streamed] == [e.bytes for e in content]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    eng = HFEngine(load_model(str(tiny_model_dir)), max_rows=4)
    yield eng
    eng.close()


def test_the_step_path_records_what_the_scheduler_records(engine, reference) -> None:
    """`HFEngine.generate` (transformers' loop with the `Picker`) and `submit` (the scheduler)
    give the same entries; a sampled row's decoded values carry its temperature."""
    params = SamplingParams(max_new_tokens=8, do_sample=True, seed=3, temperature=0.7, logprobs=2)
    prompt = reference[1]
    [stepped] = engine.generate([GenerationJob(prompt_ids=prompt, params=params)])

    async def scheduled() -> Any:
        return (await engine.submit([GenerationJob(prompt_ids=prompt, params=params)]))[0]

    batched = asyncio.run(scheduled())
    a, b = stepped.choices[0].token_logprobs, batched.choices[0].token_logprobs
    assert a and [e.id for e in a] == [e.id for e in b]
    for x, y in zip(a, b, strict=True):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5)
        assert [t for t, _ in x.top] == [t for t, _ in y.top]
    ids = [e.id for e in a]
    assert [e.logprob for e in a] == pytest.approx(model_logprobs(reference, ids, 0.7), abs=1e-4)
    assert [e.raw_logprob for e in a] == pytest.approx(model_logprobs(reference, ids), abs=1e-4)
    off = engine.generate([GenerationJob(prompt_ids=prompt, params=SamplingParams(8))])
    assert off[0].choices[0].token_logprobs is None


# ------------------------------------------------------------------ in-process, fake engine


def chat(client, **body: Any):  # noqa: ANN201
    payload = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}], **body}
    return client.post("/v1/chat/completions", json=payload, headers=AUTH)


def sse(response) -> list[dict[str, Any]]:  # noqa: ANN001
    return [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]


def test_off_unless_asked_and_the_request_rules(make_client) -> None:
    client, _ = make_client()
    for body in ({}, {"logprobs": False}):
        r = chat(client, max_tokens=8, **body)
        assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] is None
    for body, param in [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": "true"}, "logprobs"),
    ]:
        r = chat(client, max_tokens=8, **body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    r = chat(client, max_tokens=8, logprobs=True)
    [entry, *_] = r.json()["choices"][0]["logprobs"]["content"]
    assert entry["top_logprobs"] == [] and entry["logprob_unconstrained"] == entry["logprob"] - 0.5


def test_a_token_cut_by_a_stop_string_is_listed_whole_once(make_client) -> None:
    """Each chunk carries the tokens whose text it completes; " answer" is cut by the stop
    string "answer" to " ": listed (its text starts in the answer) with the chunk that releases
    that space, in the stream as in the JSON; nothing after it is listed."""
    client, _ = make_client()
    body = {"max_tokens": 30, "logprobs": True, "top_logprobs": 2, "stop": ["answer"]}
    whole = chat(client, **body).json()["choices"][0]
    tokens = [e["token"] for e in whole["logprobs"]["content"]]
    assert whole["message"]["content"] == "Hello world. This is a fake "
    assert tokens == ["Hello", " world", ".", " This", " is", " a", " fake", " answer"]
    chunks = [c["choices"][0] for c in sse(chat(client, stream=True, **body)) if c["choices"]]
    streamed = [e for c in chunks if c["logprobs"] for e in c["logprobs"]["content"]]
    assert streamed == whole["logprobs"]["content"]
    text = "".join(c["delta"].get("content") or "" for c in chunks)
    assert text == whole["message"]["content"] and "".join(tokens).startswith(text)
    assert chunks[-1]["finish_reason"] == "stop"


def test_each_choice_and_only_the_kept_draft(make_client, smollm_tokenizer) -> None:
    replies = ["the house is big.", "zzqx blorf wug."]
    engine = FakeEngine(smollm_tokenizer, reply=lambda job, choice: replies[choice % 2])
    client, _ = make_client(engine, GENERATION_MAX_CONCURRENCY=4)

    def texts(choice: dict[str, Any]) -> str:
        return "".join(e["token"] for e in choice["logprobs"]["content"])

    both = chat(client, max_tokens=16, n=2, temperature=1, logprobs=True).json()["choices"]
    assert [texts(c) for c in both] == [c["message"]["content"] for c in both] == replies
    kept = chat(
        client, max_tokens=16, logprobs=True, vocab_lang="en", vocab_n_words=1000, drafts=2
    ).json()
    assert [d["selected"] for d in kept["constraint"]["drafts"]] == [True, False]
    assert texts(kept["choices"][0]) == kept["choices"][0]["message"]["content"] == replies[0]
    streamed = sse(
        chat(client, max_tokens=16, logprobs=True, stream=True, vocab_lang="en",
             vocab_n_words=1000, drafts=2)
    )
    entries = [
        e["token"]
        for c in streamed
        for ch in c["choices"]
        if ch["logprobs"]
        for e in ch["logprobs"]["content"]
    ]
    assert "".join(entries) == replies[0]


def test_minus_infinity_is_sent_as_minus_9999_and_unknown_as_null(smollm_tokenizer) -> None:
    pieces = TokenPieces(smollm_tokenizer)
    entry = TokenLogprob(id=42, logprob=-math.inf, raw_logprob=math.nan, top=((42, -math.inf),))
    [shaped] = choice_logprobs([entry], pieces).content
    assert shaped.logprob == -9999.0 and shaped.top_logprobs[0].logprob == -9999.0
    assert shaped.logprob_unconstrained is None
    assert "Infinity" not in shaped.model_dump_json() and "NaN" not in shaped.model_dump_json()
    emoji = smollm_tokenizer.encode("🙂", add_special_tokens=False)
    parts = [pieces(t) for t in emoji]
    assert b"".join(data for _, data in parts) == "🙂".encode()
    if len(emoji) > 1:  # not whole UTF-8 alone: shown escaped
        assert parts[0][0].startswith("\\x")
