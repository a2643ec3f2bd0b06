"""`POST /v1/score` on the real tiny server, checked against an independent forward pass of the same
weights (plain transformers, float32 cross-entropy); scoring while rows decode, on the engine
itself; and admission, in-process on the fake engine. Bad inputs are rows of
tests/reliability/test_bad_inputs.py."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch
from fakes import AUTH
from wordcheck import WORD, violations

from wordlist_generation.engine.hf import HFEngine
from wordlist_generation.engine.loader import load_model
from wordlist_generation.engine.params import GenerationJob, SamplingParams

MODEL = "tiny-test"
TEXT = "The little cat sat on the warm mat, and it didn't move at all."
CHAT = [{"role": "user", "content": "Where did the cat sit?"}]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """The tiny model and tokenizer loaded with plain transformers, as nothing in the server is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_model_dir))


def score(server, **body) -> dict:
    with server.http() as http:
        r = http.post("/v1/score", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


def expected(reference, context: list[int], target: list[int]) -> tuple[float, torch.Tensor]:
    """(mean NLL in nats, the logits predicting each target token) by a plain forward pass."""
    model, _ = reference
    ids = torch.tensor([context + target])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(target))
    return float(loss), logits


def plain_ids(reference, text: str) -> list[int]:
    return list(reference[1](text, add_special_tokens=False)["input_ids"])


def test_plain_text_perplexity_matches_an_independent_forward_pass(tiny_server, reference):
    body = score(tiny_server, text=TEXT, detail="per_token")
    [entry] = body["data"]
    target = plain_ids(reference, TEXT)
    loss, _ = expected(reference, [reference[1].bos_token_id], target)
    assert entry["tokens"] == len(target)
    assert [t["id"] for t in entry["per_token"]] == target
    assert entry["loss"] == pytest.approx(loss, rel=1e-3)
    assert entry["perplexity"] == pytest.approx(math.exp(loss), rel=1e-3)
    assert entry["surprisal_bits"] == pytest.approx(loss * len(target) / math.log(2), rel=1e-3)
    assert body["object"] == "score" and body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": len(target) + 1, "total_tokens": len(target) + 1}


def test_text_as_an_answer_to_messages_is_scored_after_the_chat_prompt(tiny_server, reference):
    [entry] = score(tiny_server, text=TEXT, messages=CHAT)["data"]
    context = list(
        reference[1].apply_chat_template(
            CHAT, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )
    loss, _ = expected(reference, context, plain_ids(reference, TEXT))
    assert entry["perplexity"] == pytest.approx(math.exp(loss), rel=1e-3)
    assert "per_token" not in entry and "per_word" not in entry


def test_word_surprisal_is_the_sum_over_the_tokens_of_the_word(tiny_server):
    [tokens] = score(tiny_server, text=TEXT, detail="per_token")["data"]
    [words] = score(tiny_server, text=TEXT, detail="per_word")["data"]
    spans = [(m.group(), m.start(), m.end()) for m in WORD.finditer(TEXT)]
    assert [(w["word"], w["start"], w["end"]) for w in words["per_word"]] == spans
    covered = 0.0
    for w in words["per_word"]:
        mine = [t for t in tokens["per_token"] if t["start"] < w["end"] and w["start"] < t["end"]]
        assert w["tokens"] == len(mine) >= 1
        assert w["surprisal_bits"] == pytest.approx(sum(t["surprisal_bits"] for t in mine))
        covered += w["surprisal_bits"]
    # Punctuation-only tokens ("," and ".") belong to no word.
    outside = [t for t in tokens["per_token"] if not WORD.search(TEXT[t["start"] : t["end"]])]
    assert outside
    total = covered + sum(t["surprisal_bits"] for t in outside)
    assert total == pytest.approx(tokens["surprisal_bits"])


def test_top_k_alternatives_are_sorted_and_start_with_the_argmax(tiny_server, reference):
    [entry] = score(tiny_server, text=TEXT, detail="per_token", top_k=5)["data"]
    _, logits = expected(reference, [reference[1].bos_token_id], plain_ids(reference, TEXT))
    for i, tok in enumerate(entry["per_token"]):
        top = tok["top"]
        assert len(top) == 5
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True)
        assert top[0]["id"] == int(torch.argmax(logits[i]))
        assert top[0]["logprob"] >= tok["logprob"] - 1e-6
        if tok["id"] in {t["id"] for t in top}:
            same = next(t for t in top if t["id"] == tok["id"])
            assert same["logprob"] == pytest.approx(tok["logprob"], abs=1e-5)


def test_texts_get_one_entry_each_scored_on_its_own(tiny_server):
    texts = ["A cat.", TEXT, "Hola, ¿qué tal?"]
    body = score(tiny_server, texts=texts)
    assert [e["index"] for e in body["data"]] == [0, 1, 2]
    for text, entry in zip(texts, body["data"], strict=True):
        [alone] = score(tiny_server, text=text)["data"]
        assert entry["loss"] == pytest.approx(alone["loss"], rel=1e-6)


def test_the_vocabulary_report_names_an_english_word_in_a_spanish_text(tiny_server):
    text = "El niño tiene una casa muy grande, house."
    assert violations(text, "es", 1000) == ["house"]  # the independent list check agrees
    [entry] = score(tiny_server, text=text, vocab_lang="es", vocab_n_words=1000)["data"]
    report = entry["vocabulary"]
    assert report["compliant"] is False
    assert report["vocab_lang"] == "es" and report["vocab_n_words"] == 1000
    assert len(report["violations"]) == 1 and "house" in report["violations"][0]
    [clean] = score(tiny_server, text="El niño tiene una casa.", vocab_lang="es",
                    vocab_n_words=1000)["data"]
    assert clean["vocabulary"]["compliant"] is True and clean["vocabulary"]["violations"] == []


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    e = HFEngine(load_model(str(tiny_model_dir)), torch_threads=1, max_rows=4, prefill_chunk=8)
    yield e
    e.close()


def test_scoring_while_rows_decode_changes_neither(engine):
    """A scoring pass runs on the scheduler thread between steps: the same numbers as alone, and
    the running row decodes the tokens it decodes alone."""
    prompt = engine.encode_chat([{"role": "user", "content": "Tell me a story."}])
    params = SamplingParams(max_new_tokens=24)
    target = list(engine.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    context = [engine.tokenizer.bos_token_id]
    quiet = engine.score(context, target, 3)

    def generate(delta=None) -> list[int]:
        box: list = []
        done = threading.Event()
        job = GenerationJob(prompt_ids=prompt, params=params, on_delta=delta)
        engine.scheduler.submit([job], lambda r: (box.append(r), done.set()))
        assert done.wait(60)
        return box[0][0].choices[0].token_ids

    alone = generate()
    streaming = threading.Event()
    busy: list = []
    worker = threading.Thread(target=lambda: busy.append(generate(lambda *_: streaming.set())))
    worker.start()
    assert streaming.wait(30)
    during = [engine.score(context, target, 3) for _ in range(3)]
    worker.join(60)
    assert busy == [alone]
    for out in during:
        assert out.logprobs == quiet.logprobs
        assert out.top_ids == quiet.top_ids


def test_scoring_waits_its_turn_and_a_full_queue_refuses_it(make_client):
    """One row, one waiting request: scoring is refused with 429 like a chat request, before any
    work; once rows are free it runs (plain text after the BOS token, an answer after the chat
    prompt)."""
    client, engine = make_client()
    state = client.app.state.server
    engine.gate.clear()
    chat = {"model": "fake-model", "messages": CHAT, "max_tokens": 4}
    threads = [
        threading.Thread(
            target=client.post, args=("/v1/chat/completions",), kwargs={"json": chat, "headers": AUTH}
        )
        for _ in range(2)
    ]
    threads[0].start()
    assert engine.started.wait(10)
    threads[1].start()
    deadline = time.monotonic() + 10
    while state.limiter.waiting != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    r = client.post("/v1/score", json={"model": "fake-model", "text": TEXT}, headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert engine.scored == []
    engine.gate.set()
    for t in threads:
        t.join(10)
    body = {"model": "fake-model", "texts": ["Hi there", TEXT], "messages": CHAT}
    r = client.post("/v1/score", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    r = client.post("/v1/score", json={"model": "fake-model", "text": "Hi"}, headers=AUTH)
    assert r.status_code == 200, r.text
    prompt = engine.encode_chat(CHAT)
    bos = engine.tokenizer.bos_token_id
    assert [(c, k) for c, _, k in engine.scored] == [(prompt, 0), (prompt, 0), ([bos], 0)]
    assert state.limiter.running == 0


def test_a_text_past_the_input_limit_is_context_length_exceeded(make_client):
    client, engine = make_client(MAX_INPUT_TOKENS=8)
    r = client.post("/v1/score", json={"model": "fake-model", "text": TEXT}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "text"
    assert engine.scored == []
