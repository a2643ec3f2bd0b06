"""This server with ENGINE=vllm, in front of a real vLLM server: the answers users get through the
openai SDK (word lists, streaming, n, drafts, sounds, logprobs, scoring, a batch job), each
re-checked word by word by the independent checker, and what it refuses."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import openai
import pytest
from server_process import ServerProcess
from vllm_env import SERVED
from wordcheck import violations

REPO = Path(__file__).resolve().parents[1]
ES = {"vocab_lang": "es", "vocab_n_words": 1000}
NO_R = [{"type": "exclude", "phonemes": ["r"]}]


def gateway_env(upstreams: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "ENGINE": "vllm",
        "VLLM_URLS": upstreams,
        "VLLM_MODEL": SERVED,
        "VLLM_READ_TIMEOUT_SECONDS": "300",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
        "GENERATION_MAX_CONCURRENCY": "8",
        "LEXICON_PRELOAD": "false",
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    # No VLLM_TOKENIZER: the tokenizer is found where the upstream loaded the model (`root`).
    server = ServerProcess(
        "wordlist_generation.main:app",
        gateway_env(vllm_server, tmp),
        REPO / "var" / "vllm-gateway.log",
    )
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gateway) -> openai.OpenAI:
    return gateway.client(timeout=300)


def ask(client: openai.OpenAI, prompt: str, **extra):
    extra.setdefault("max_tokens", 48)
    extra.setdefault("temperature", 0)
    max_tokens, temperature = extra.pop("max_tokens"), extra.pop("temperature")
    n = extra.pop("n", 1)
    return client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=temperature,
        n=n,
        extra_body=extra,
    )


def constraint_of(response) -> dict:
    return response.model_extra["constraint"]


def test_health_reports_the_upstreams(gateway) -> None:
    with gateway.http() as http:
        body = http.get("/health").json()
        models = http.get("/v1/models").json()
    assert body["status"] == "ready" and body["engine"] == "vllm"
    assert body["upstreams"]["up"] == 1 and body["upstreams"]["total"] == 1
    assert [m["id"] for m in models["data"]] == [SERVED]


def test_a_word_list_answer_is_decoded_upstream_and_rechecked_here(client) -> None:
    response = ask(client, "Cuéntame un cuento corto sobre un perro.", **ES)
    text = response.choices[0].message.content
    report = constraint_of(response)
    assert text.strip() and report["compliant"], (text, report)
    assert violations(text, "es", 1000) == [], text
    assert report["enforcement"]["engine"] == "vllm"
    assert response.usage.completion_tokens > 0


def test_headwords_count_forms_too(client) -> None:
    response = ask(client, "Describe a tu familia.", vocab_unit="lemma", **ES)
    text = response.choices[0].message.content
    assert constraint_of(response)["compliant"], text
    assert violations(text, "es", 1000, unit="lemma") == [], text


def test_a_streamed_answer_releases_whole_words_only(client) -> None:
    stream = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "Escribe sobre el mar."}],
        max_tokens=48,
        temperature=0,
        stream=True,
        extra_body=ES,
    )
    deltas, report = [], None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
        report = (chunk.model_extra or {}).get("constraint") or report
    text = "".join(deltas)
    assert text.strip() and report is not None and report["compliant"], (deltas, report)
    assert violations(text, "es", 1000) == [], text
    assert len(deltas) > 3, deltas
    for a, b in zip(deltas, deltas[1:], strict=False):  # a word is released whole, never split
        assert not (a[-1].isalpha() and b[0].isalpha()), deltas


def test_n_2_sampled_choices_are_each_compliant(client) -> None:
    response = ask(client, "Escribe sobre tu casa.", n=2, temperature=0.8, seed=7, **ES)
    assert len(response.choices) == 2
    for choice in response.choices:
        assert violations(choice.message.content, "es", 1000) == [], choice.message.content
    assert constraint_of(response)["compliant"]


def test_drafts_are_ranked_by_the_upstreams_logprobs(client) -> None:
    response = ask(client, "Escribe sobre el sol.", drafts=2, **ES)
    drafts = constraint_of(response)["drafts"]
    assert len(drafts) == 2 and sum(d["selected"] for d in drafts) == 1
    assert all(d["mean_logprob_unconstrained"] < 0 for d in drafts), drafts
    assert violations(response.choices[0].message.content, "es", 1000) == []


def test_logprobs_come_back_per_token(client) -> None:
    response = ask(client, "Escribe sobre el pan.", logprobs=True, top_logprobs=2, **ES)
    content = response.choices[0].logprobs.content
    assert content and all(e.logprob <= 0 and len(e.top_logprobs) <= 2 for e in content)
    assert "".join(e.token for e in content).strip()


def test_a_sound_exclusion_is_enforced_and_steering_is_reported_missing(client) -> None:
    response = ask(
        client,
        "Tell me a short story about a dog.",
        vocab_lang="en",
        constraints=NO_R + [{"type": "include", "phonemes": ["s"], "position": "initial"}],
        max_tokens=64,
    )
    text = response.choices[0].message.content
    report = constraint_of(response)
    assert text.strip(), report
    assert not any("r" in v for v in report["violations"] if "exclude" in v), report
    assert "not applied" in report["enforcement"]["steering"]
    exclude_only = ask(client, "Tell me about a cat.", vocab_lang="en", constraints=NO_R)
    assert constraint_of(exclude_only)["compliant"], exclude_only.choices[0].message.content


def test_scoring_reads_the_upstreams_prompt_logprobs(gateway, vllm_model) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "The dog runs home and sleeps."
    with gateway.http() as http:
        r = http.post("/v1/score", json={"model": SERVED, "text": text, "detail": "per_token"})
    assert r.status_code == 200, r.text
    [entry] = r.json()["data"]
    # The same weights read here, in float32, by transformers: the same loss within 5%.
    tokenizer = AutoTokenizer.from_pretrained(vllm_model)
    model = AutoModelForCausalLM.from_pretrained(vllm_model, torch_dtype=torch.float32)
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert [t["id"] for t in entry["per_token"]] == ids[1:]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item()
    assert entry["loss"] == pytest.approx(loss, rel=0.05)


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"num_beams": 2}, "num_beams"), ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size")],
)
def test_what_vllm_cannot_run_is_a_400_naming_it(client, extra, param) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "Hola.", **ES, **extra)
    assert err.value.body["param"] == param


def test_a_batch_job_goes_through_the_upstream_and_is_rechecked(client) -> None:
    lines = [
        {
            "custom_id": f"item-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": SERVED,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 40,
                "temperature": 0,
                **ES,
            },
        }
        for i, prompt in enumerate(["Escribe sobre un gato.", "Escribe sobre la escuela."])
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("items.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 300
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 2, batch
    results = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    for result in results:
        body = result["response"]["body"]
        text = body["choices"][0]["message"]["content"]
        assert body["constraint"]["compliant"] and violations(text, "es", 1000) == [], text
