"""`POST /v1/completions` (OpenAI's legacy text completions) as a user sees it: the real tiny server
driven by the `openai` SDK. Echoed prompt log-probabilities are checked against an independent
forward pass of the same weights (plain transformers, float32 cross-entropy), constrained text
against the independent word checker. Bad inputs are rows of tests/reliability/test_bad_inputs.py.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import openai
import pytest
import torch
from fakes import AUTH
from wordcheck import violations

MODEL = "tiny-test"
TEXT = "The little cat sat on the warm mat, and it didn't move at all."


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """The tiny model and tokenizer loaded with plain transformers, as nothing in the server is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_model_dir))


def prompt_ids(reference, text: str) -> list[int]:
    """The prompt as the server reads it: BOS, then the text's own tokens."""
    tokenizer = reference[1]
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


def test_echo_perplexity_matches_an_independent_forward_pass(tiny_server, reference) -> None:
    r = tiny_server.client().completions.create(
        model=MODEL, prompt=TEXT, echo=True, max_tokens=0, logprobs=3
    )
    [choice] = r.choices
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert choice.text == TEXT and choice.finish_reason == "length"
    ids = prompt_ids(reference, TEXT)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 0

    model, _ = reference
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])))
    perplexity = math.exp(-sum(lp.token_logprobs[1:]) / (len(ids) - 1))
    assert perplexity == pytest.approx(math.exp(loss), rel=1e-3)

    best = torch.log_softmax(logits, dim=-1).topk(3, dim=-1)
    for i in range(1, len(ids)):
        top = lp.top_logprobs[i]
        assert lp.tokens[i] in top and top[lp.tokens[i]] == lp.token_logprobs[i]
        assert 3 <= len(top) <= 4  # the 3 best, and the prompt's own token
        assert max(top.values()) == pytest.approx(float(best.values[i - 1, 0]), abs=1e-4)
        assert TEXT[lp.text_offset[i] :].startswith(lp.tokens[i])


def test_echo_and_generated_logprobs_cover_prompt_and_completion(tiny_server, reference) -> None:
    r = tiny_server.client().completions.create(
        model=MODEL, prompt=TEXT, echo=True, max_tokens=6, logprobs=2, extra_body={"num_beams": 1}
    )
    [choice] = r.choices
    assert choice.text.startswith(TEXT)
    lp = choice.logprobs
    prompt = len(prompt_ids(reference, TEXT))
    generated = len(lp.tokens) - prompt
    assert 0 < generated <= 6 and r.usage.completion_tokens >= generated
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(lp.tokens)
    assert lp.text_offset == sorted(lp.text_offset)
    assert lp.text_offset[prompt] == len(TEXT)
    for i in range(prompt, len(lp.tokens)):  # greedy: each generated token is the most likely
        assert lp.token_logprobs[i] <= 0
        assert lp.token_logprobs[i] == pytest.approx(max(lp.top_logprobs[i].values()), abs=1e-5)


def test_constrained_completion_passes_the_independent_checker(tiny_server) -> None:
    r = tiny_server.client().completions.create(
        model=MODEL,
        prompt="Había una vez",
        max_tokens=12,
        temperature=0.8,
        seed=3,
        extra_body={"vocab_lang": "es", "vocab_n_words": 1000},
    )
    [choice] = r.choices
    assert choice.text.strip()
    assert violations(choice.text, "es", 1000) == []
    constraint = r.model_extra["constraint"]
    assert constraint["vocab_lang"] == "es" and constraint["compliant"] is True


def test_streaming_through_the_sdk_matches_the_plain_answer(tiny_server) -> None:
    client = tiny_server.client()
    args = {"model": MODEL, "prompt": "Once upon", "max_tokens": 6, "echo": True, "logprobs": 2}
    plain = client.completions.create(**args, extra_body={"num_beams": 1})
    chunks = list(
        client.completions.create(
            **args,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"num_beams": 1},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text and text.startswith("Once upon")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [reason for reason in finish if reason] == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    streamed = {"tokens": [], "token_logprobs": [], "text_offset": []}
    for c in chunks:
        for name, values in streamed.items():
            if c.choices and c.choices[0].logprobs:
                values += getattr(c.choices[0].logprobs, name)
    expected = plain.choices[0].logprobs
    assert streamed["tokens"] == expected.tokens
    assert streamed["text_offset"] == expected.text_offset
    assert streamed["token_logprobs"][0] is None
    assert streamed["token_logprobs"][1:] == pytest.approx(expected.token_logprobs[1:], abs=1e-5)


def test_n_and_a_list_of_prompts_are_indexed_prompt_major(tiny_server) -> None:
    prompts = ["One day", "In the end"]
    r = tiny_server.client().completions.create(
        model=MODEL, prompt=prompts, n=2, temperature=1.0, seed=7, max_tokens=3, echo=True
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c in r.choices:
        assert c.text.startswith(prompts[c.index // 2])


def test_echo_only_streams_the_prompt(make_client) -> None:
    client, engine = make_client()
    r = client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": "Hola", "echo": True, "max_tokens": 0,
              "stream": True, "stream_options": {"include_usage": True}},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert '"text": "Hola"' in events[0] and '"finish_reason": "length"' in events[0]
    assert '"prompt_tokens": 3' in events[1]  # BOS + "H" "ola"
    assert not engine.submitted  # nothing generated


def test_prompt_tokens_start_with_bos_once(make_client) -> None:
    client, engine = make_client()
    for prompt in ("Hello", "<|im_start|>Hello"):
        r = client.post(
            "/v1/completions",
            json={"model": "fake-model", "prompt": prompt, "max_tokens": 2},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        assert engine.submitted[-1].prompt_ids == [1, 19556]  # <|im_start|> Hello
        assert r.json()["usage"]["prompt_tokens"] == 2


def test_the_route_and_its_fields_are_in_the_openapi_document(make_client) -> None:
    client, _ = make_client()
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/completions"]["post"]
    ok = op["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/TextCompletion")
    assert "text/event-stream" in ok
    assert {"400", "404", "413", "429"} <= set(op["responses"])
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = doc["components"]["schemas"][body]["properties"]
    assert {"prompt", "echo", "logprobs", "max_tokens", "vocab_lang", "drafts"} <= set(fields)
    assert "vocab_prompt_hint" not in fields
    logprobs = doc["components"]["schemas"]["CompletionLogprobs"]["properties"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}


def test_openai_batch_runs_text_completion_lines(tiny_server) -> None:
    client = tiny_server.client()

    def line(custom_id: str, **body) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/completions",
                "body": {"model": MODEL, **body}}

    lines = [
        line("plain", prompt="Once upon", max_tokens=4, num_beams=1),
        line("scored", prompt=TEXT, echo=True, max_tokens=0, logprobs=1),
        line("two", prompt=["One", "Two"], max_tokens=3, num_beams=1, echo=True),
        line("es", prompt="Había", max_tokens=8, num_beams=1, vocab_lang="es", vocab_n_words=1000),
    ]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:  # lines must match the endpoint
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert refused.value.body["param"] == "line[1].url"
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while batch.status not in {"completed", "failed"} and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/completions", batch
    output = client.files.content(batch.output_file_id).text.splitlines()
    bodies = {r["custom_id"]: r["response"]["body"] for r in map(json.loads, output)}
    assert all(b["object"] == "text_completion" for b in bodies.values())
    direct = client.completions.create(
        model=MODEL, prompt=TEXT, echo=True, max_tokens=0, logprobs=1
    )
    scored = bodies["scored"]["choices"][0]
    assert scored["text"] == TEXT
    assert scored["logprobs"]["token_logprobs"] == pytest.approx(
        direct.choices[0].logprobs.token_logprobs, abs=1e-5
    )
    assert [c["text"][:3] for c in bodies["two"]["choices"]] == ["One", "Two"]
    assert bodies["es"]["constraint"]["compliant"] is True
    assert violations(bodies["es"]["choices"][0]["text"], "es", 1000) == []
