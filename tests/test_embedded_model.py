"""End to end on the real embedded SmolLM2 model: plain and constrained, every word checked."""

from __future__ import annotations

import pytest
from wordcheck import violations, words

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"


def test_models_lists_the_embedded_model(embedded_server) -> None:
    assert [m.id for m in embedded_server.client().models.list().data] == [MODEL]


def test_the_embedded_model_runs_its_own_4_bit_weights(embedded_server) -> None:
    """CPU_QUANTIZATION defaults to auto: int4 for the embedded model, reported by /health."""
    import httpx

    body = httpx.get(f"{embedded_server.base_url}/health", timeout=10).json()
    assert body["engine"] == "hf" and body["device"] == "cpu"
    assert body["quantization"] == "int4"
    assert body["dense_prefill"] is True  # CPU_DENSE_PREFILL defaults to true


def test_plain_completion_is_sensible(embedded_server) -> None:
    r = embedded_server.client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
        ],
        max_tokens=24,
        extra_body={"num_beams": 1},
    )
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.model_extra["constraint"] is None


@pytest.mark.parametrize(
    "lang,n_words,kwargs",
    [
        ("es", 1000, {"extra_body": {"num_beams": 1}}),
        ("es", 3000, {"temperature": 0.7, "seed": 3}),
        ("en", 1000, {"extra_body": {"num_beams": 2}}),
    ],
    ids=["es1000-greedy", "es3000-sample", "en1000-beam2"],
)
def test_constrained_answers_use_only_list_words(embedded_server, lang, n_words, kwargs) -> None:
    extra = {"vocab_lang": lang, "vocab_n_words": n_words, **kwargs.pop("extra_body", {})}
    prompt = (
        "Cuéntame un cuento corto sobre un perro."
        if lang == "es"
        else "Tell me a short story about a dog."
    )
    r = embedded_server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=40,
        extra_body=extra,
        **kwargs,
    )
    text = r.choices[0].message.content
    assert len(words(text)) >= 3, text
    assert violations(text, lang, n_words) == [], text
    info = r.model_extra["constraint"]
    assert info["violations"] == []
    assert info["vocab_lang"] == lang and info["vocab_n_words"] == n_words


def test_constrained_stream_never_sends_a_fragment(embedded_server) -> None:
    stream = embedded_server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe tu casa."}],
        max_tokens=30,
        stream=True,
        extra_body={"vocab_lang": "es", "vocab_n_words": 1000, "num_beams": 1},
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    text = "".join(pieces)
    assert violations(text, "es", 1000) == [], text
    # Every prefix the client saw ends at a word boundary: checking each prefix finds no fragment.
    seen = ""
    for piece in pieces:
        seen += piece
        assert violations(seen, "es", 1000) == [], seen
