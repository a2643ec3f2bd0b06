"""Wordlist mode through the real server and the openai SDK, for both backends.

The tiny random model writes word salad, which is the harshest test of a mask: every word it
produces must still come from the list, in every decoding mode.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
from server_process import ServerProcess
from wordcheck import REPO, violations, words

MODEL = "tiny-test"
MSG = [{"role": "user", "content": "Escribe algo."}]


@pytest.fixture(scope="module", params=["llguidance", "lm-format-enforcer"])
def server(request, tiny_server, tiny_model_dir, tmp_path_factory, server_logs):
    """The shared tiny server (llguidance) or a chat server with lm-format-enforcer."""
    if request.param == "llguidance":
        yield tiny_server
        return
    from server_process import tiny_env

    env = {
        **tiny_env(tiny_model_dir, tmp_path_factory.mktemp("lmfe")),
        "CONSTRAINT_BACKEND": "lm-format-enforcer",
    }
    proc = ServerProcess(
        "wordlist_generation.app_chat:app", env, server_logs / "tiny-lmfe.log"
    ).start()
    yield proc
    proc.stop()


def ask(server, n_words: int = 1000, lang: str = "es", **kwargs):
    extra = {"vocab_lang": lang, "vocab_n_words": n_words, **kwargs.pop("extra_body", {})}
    return server.client().chat.completions.create(
        model=MODEL, messages=MSG, extra_body=extra, **{"max_tokens": 24, **kwargs}
    )


def assert_in_list(text: str, lang: str = "es", n: int = 1000) -> None:
    assert violations(text, lang, n) == [], text


def test_greedy(server) -> None:
    r = ask(server, extra_body={"num_beams": 1})
    text = r.choices[0].message.content
    assert words(text), text
    assert_in_list(text)
    info = r.model_extra["constraint"]
    assert info["violations"] == [] and info["vocab_n_words"] == 1000
    expected = hashlib.sha256(
        ("\n".join((REPO / "wordlists/es.txt").read_text().splitlines()[:1000]) + "\n").encode()
    ).hexdigest()
    assert info["sha256"] == expected
    assert info["backend"] in ("llguidance", "lm-format-enforcer")


def test_sampling_with_seeds_is_reproducible(server) -> None:
    a = ask(server, temperature=1.0, seed=11, n=2)
    b = ask(server, temperature=1.0, seed=11, n=2)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    for c in a.choices:
        assert_in_list(c.message.content)


def test_beam_search_n3(server) -> None:
    r = ask(server, n=3, extra_body={"num_beams": 4})
    assert len(r.choices) == 3
    for c in r.choices:
        assert_in_list(c.message.content)


def test_streaming(server) -> None:
    stream = ask(server, stream=True, extra_body={"num_beams": 1})
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    seen = ""
    for piece in pieces:
        seen += piece
        assert_in_list(seen)  # never a fragment on the wire


@pytest.mark.parametrize("max_tokens", [3, 7, 13])
def test_max_tokens_truncation_trims_fragment(server, max_tokens) -> None:
    r = ask(server, max_tokens=max_tokens, extra_body={"num_beams": 1})
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == max_tokens
    assert_in_list(c.message.content)


def test_larger_list_and_other_language(server) -> None:
    r = ask(server, n_words=3000, lang="en", extra_body={"num_beams": 1})
    assert_in_list(r.choices[0].message.content, "en", 3000)


def test_wordlists_listing(server) -> None:
    with server.http() as http:
        data = http.get("/v1/wordlists").json()["data"]
    by_lang = {d["lang"]: d for d in data}
    assert {"es", "en", "fr", "de", "it", "pt"} <= set(by_lang)
    raw = (REPO / "wordlists/es.txt").read_bytes()
    assert by_lang["es"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert by_lang["es"]["n_words"] >= 50000


BAD = [
    ("missing n_words", {"vocab_lang": "es"}, 400, "vocab_n_words"),
    ("missing lang", {"vocab_n_words": 10}, 400, "vocab_lang"),
    ("unknown language", {"vocab_lang": "xx", "vocab_n_words": 10}, 404, "vocab_lang"),
    ("path-like language", {"vocab_lang": "../etc", "vocab_n_words": 10}, 400, "vocab_lang"),
    ("n_words zero", {"vocab_lang": "es", "vocab_n_words": 0}, 400, "vocab_n_words"),
    ("n_words negative", {"vocab_lang": "es", "vocab_n_words": -5}, 400, "vocab_n_words"),
    (
        "n_words beyond list",
        {"vocab_lang": "es", "vocab_n_words": 10_000_000},
        400,
        "vocab_n_words",
    ),
    ("n_words not integer", {"vocab_lang": "es", "vocab_n_words": 2.5}, 400, "vocab_n_words"),
    ("n_words string", {"vocab_lang": "es", "vocab_n_words": "many"}, 400, "vocab_n_words"),
    ("lang not a string", {"vocab_lang": 5, "vocab_n_words": 10}, 400, "vocab_lang"),
]


@pytest.mark.parametrize("name,fields,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_vocab_inputs(tiny_server, name, fields, status, param) -> None:
    with tiny_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "max_tokens": 2, **fields},
        )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    if name == "unknown language":
        assert err["code"] == "wordlist_not_found" and "es" in err["message"]
    if name == "n_words beyond list":
        assert "50000" in err["message"]


def test_unconstrained_reports_null_constraint(tiny_server) -> None:
    r = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions",
        headers={"Authorization": "Bearer test-token"},
        json={"model": MODEL, "messages": MSG, "max_tokens": 2, "num_beams": 1},
    ).json()
    assert "constraint" in r and r["constraint"] is None


def test_lemma_unit_counts_headwords(tiny_server) -> None:
    """es/1000 headwords: every word of the answer is a form of one of them (checked against
    the shipped lemma file by the independent checker), and the response says so."""
    r = ask(tiny_server, extra_body={"num_beams": 1, "vocab_unit": "lemma"}, max_tokens=32)
    text = r.choices[0].message.content
    assert words(text), text
    assert violations(text, "es", 1000, unit="lemma") == [], text
    info = r.model_extra["constraint"]
    assert info["vocab_unit"] == "lemma" and info["vocab_n_words"] == 1000
    assert info["allowed_forms"] > 1000 and info["compliant"] is True


def test_greedy_drafts_are_ranked_by_fluency(tiny_server) -> None:
    """A greedy request with drafts: draft 0 is the greedy answer, the others are sampled; the
    kept one is the most fluent compliant draft, and the same request gives the same answer."""
    extra = {"num_beams": 1, "drafts": 3}
    first = ask(tiny_server, extra_body=extra)
    greedy = ask(tiny_server, extra_body={"num_beams": 1})
    drafts = first.model_extra["constraint"]["drafts"]
    assert [d["draft"] for d in drafts] == [0, 1, 2]
    assert drafts[0]["text"] == greedy.choices[0].message.content
    assert len({d["text"] for d in drafts}) > 1  # sampled drafts differ
    assert all(d["mean_logprob_unconstrained"] is not None for d in drafts)
    best = max(drafts, key=lambda d: (d["compliant"], d["fluency"]))
    assert best["selected"] and sum(d["selected"] for d in drafts) == 1
    assert first.choices[0].message.content == best["text"]
    assert_in_list(best["text"])
    again = ask(tiny_server, extra_body=extra)
    assert again.choices[0].message.content == first.choices[0].message.content


def test_no_repeat_ngram_never_pushes_a_word_out_of_the_list(tiny_server) -> None:
    """Twenty words and no repeated token pair: the ban runs out of allowed tokens quickly, and
    then gives way to the list (a banned token is penalised, never the constraint broken)."""
    r = ask(
        tiny_server,
        n_words=20,
        extra_body={"num_beams": 1, "no_repeat_ngram_size": 2},
        max_tokens=48,
    )
    text = r.choices[0].message.content
    assert_in_list(text, n=20)
    assert r.model_extra["constraint"]["compliant"] is True
    assert r.choices[0].finish_reason in ("stop", "length")
