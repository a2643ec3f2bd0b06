"""`GET /v1/phonemes`, `POST /v1/words/explain` and the page's files, in-process on the fake engine.

The phonological cases use the real lexicon (the cached parquet every phonology test reads); the
expected facts (ranks, pronunciations) are read here from the list files and CMUdict directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import AUTH, FakeEngine, settings_for, wait_ready
from fastapi.testclient import TestClient

from wordlist_generation.apps import create_batch_app, create_chat_app
from wordlist_generation.constraints.phonology.phonemes import INVENTORY

REPO = Path(__file__).resolve().parents[1]
T_K_NO_R = [
    {"type": "exclude", "phonemes": ["r"]},
    {"type": "contrastive_minpair", "phoneme1": "t", "phoneme2": "k", "position": "initial"},
    {"type": "bound", "norm": "syllables", "max_value": 2},
]


def rank_in(lang: str, word: str) -> int:
    lines = (REPO / "wordlists" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
    return lines.index(word) + 1


@pytest.fixture(scope="module")
def client(smollm_tokenizer, tmp_path_factory) -> Iterator[TestClient]:
    settings = settings_for(tmp_path_factory.mktemp("words-api"), MAX_REQUEST_BYTES=65536)
    with TestClient(create_chat_app(settings, engine=FakeEngine(smollm_tokenizer))) as c:
        assert wait_ready(c)["status"] == "ready"
        yield c


def explain(client: TestClient, **body) -> dict:
    r = client.post("/v1/words/explain", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def error(client: TestClient, status: int, body: dict) -> dict:
    r = client.post("/v1/words/explain", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    return r.json()["error"]


# ------------------------------------------------------------------------------------ phonemes


def test_phonemes_list_the_inventory_with_spellings_and_examples(client: TestClient) -> None:
    body = client.get("/v1/phonemes", headers=AUTH).json()
    by_ipa = {p["ipa"]: p for p in body["data"]}
    assert list(by_ipa) == list(INVENTORY)
    r = by_ipa["ɹ"]
    assert "r" in r["ascii"] and r["arpabet"] == "R" and r["kind"] == "consonant"
    assert r["features"] == {
        "place": "alveolar",
        "manner": "liquid",
        "voiced": True,
        "sonorant": True,
    }
    assert r["excluding_also_excludes"] == ["ɝ", "ɚ"]
    assert by_ipa["tʃ"]["ascii"] == ["ch", "tsh"] and by_ipa["ʃ"]["examples"]["initial"] == "she"
    assert by_ipa["ə"]["arpabet"] == "AH0" and by_ipa["ʌ"]["arpabet"] == "AH1"
    assert by_ipa["ə"]["kind"] == "vowel" and by_ipa["ə"]["features"] is None
    assert by_ipa["ð"]["examples"]["initial"] == "the" and by_ipa["ð"]["n_words"] > 100
    assert body["positions"] == ["initial", "medial", "final", "any"]
    assert body["lexicon"]["n_words"] > 40_000


def test_phonemes_need_the_token_and_refuse_unknown_parameters(client: TestClient) -> None:
    assert client.get("/v1/phonemes").status_code == 401
    r = client.get("/v1/phonemes?lang=fr", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "lang"
    assert client.get("/v1/phonemes?token=unit-test-secret").status_code == 200


# ---------------------------------------------------------------------------- explain: lists


def test_explain_gives_list_ranks_capitals_clitics_and_outsiders(client: TestClient) -> None:
    body = explain(
        client, words=["Hola", "casa", "ordenador", "zzzq"], vocab_lang="es", vocab_n_words=1000
    )
    assert body["mode"] == "wordlist" and body["vocab_n_words"] == 1000 and body["unit"] == "word"
    hola, casa, ordenador, nonsense = body["data"]
    assert hola["rank"] == rank_in("es", "hola") and hola["allowed"]
    assert "capitalized" in hola["reason"]
    assert casa["rank"] == rank_in("es", "casa") and casa["allowed"] and casa["rank"] <= 1000
    assert ordenador["in_list"] and not ordenador["allowed"] and ordenador["rank"] > 1000
    assert "outside the first 1,000 words" in ordenador["reason"]
    assert not nonsense["in_list"] and nonsense["rank"] is None and not nonsense["allowed"]

    (homme,) = explain(client, words=["l’homme"], vocab_lang="fr", vocab_n_words=1000)["data"]
    assert homme["allowed"] and [p["word"] for p in homme["parts"]] == ["l'", "homme"]
    assert homme["parts"][1]["rank"] == rank_in("fr", "homme")


# ---------------------------------------------------------------------------- explain: sounds


def test_explain_says_which_constraint_each_word_serves(client: TestClient) -> None:
    body = explain(client, words=["Take", "cake,", "red", "sun"], constraints=T_K_NO_R)
    assert body["mode"] == "phonological"
    assert [c["type"] for c in body["constraints"]] == ["exclude", "contrastive_minpair", "bound"]
    assert 0 < body["vocabulary"]["survival"] < 1
    take, cake, red, sun = body["data"]
    assert take["form"] == "take" and take["pronunciations"] == ["t eɪ k"]
    assert cake["form"] == "cake" and cake["syllables"] == 1
    for word in (take, cake):
        roles = {r["constraint_index"]: r for r in word["constraints"]}
        assert word["allowed"] and roles[0]["ok"] and roles[2]["ok"]
        assert roles[1]["role"] == "target" and "take / cake" in roles[1]["detail"]
    assert not red["allowed"]
    assert red["constraints"][0] == {
        "constraint_index": 0,
        "type": "exclude",
        "label": "exclude /ɹ ɚ ɝ/",
        "role": "filter",
        "ok": False,
        "detail": "contains /ɹ/",
    }
    assert sun["allowed"] and 1 not in {r["constraint_index"] for r in sun["constraints"]}


def test_explain_refuses_unsatisfiable_sounds_with_the_constraint_at_fault(
    client: TestClient,
) -> None:
    raw = [{"type": "exclude", "phonemes": ["t"]}, T_K_NO_R[1]]
    err = error(client, 422, {"words": ["cake"], "constraints": raw})
    assert err["param"] == "constraints.0" and err["constraint_index"] == 0
    assert "constraint 0 (exclude /t/)" in err["message"]


# ---------------------------------------------------------------------------- explain: errors


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"words": [], "vocab_lang": "es", "vocab_n_words": 10}, "words"),
        ({"words": ["two words"], "vocab_lang": "es", "vocab_n_words": 10}, "words.0"),
        ({"words": ["ok", 7], "vocab_lang": "es", "vocab_n_words": 10}, "words.1"),
        ({"words": ["x" * 65], "vocab_lang": "es", "vocab_n_words": 10}, "words.0"),
        ({"words": ["hola"]}, "vocab_lang"),
        ({"words": ["hola"], "vocab_lang": "es"}, "vocab_n_words"),
        ({"words": ["hola"], "vocab_lang": "es", "vocab_n_words": "10"}, "vocab_n_words"),
        ({"words": ["hola"], "vocab_lang": "es", "vocab_n_words": True}, "vocab_n_words"),
        ({"words": ["hola"], "vocab_lang": "es", "vocab_n_words": 0}, "vocab_n_words"),
        ({"words": ["hola"], "vocab_lang": "es", "vocab_n_words": 10**9}, "vocab_n_words"),
        ({"words": ["hola"], "vocab_lang": "../es", "vocab_n_words": 10}, "vocab_lang"),
        ({"words": ["hola"], "vocab_lang": "es", "vocab_n_words": 10, "text": "x"}, "text"),
        ({"words": ["hi"], "constraints": []}, "constraints"),
        (
            {"words": ["hi"], "constraints": [{"type": "exclude", "phonemes": ["q"]}]},
            "constraints.0.phonemes.0",
        ),
        ({"words": ["hi"], "constraints": [{"type": "rhyme"}]}, "constraints.0.type"),
        ({"words": ["hi"], "vocab_lang": "es", "constraints": T_K_NO_R}, "vocab_lang"),
    ],
)
def test_explain_names_the_bad_field(client: TestClient, body: dict, param: str) -> None:
    r = client.post("/v1/words/explain", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_explain_refuses_lone_surrogates_like_every_body(client: TestClient) -> None:
    body = b'{"words": ["hola\\ud800"], "vocab_lang": "es", "vocab_n_words": 10}'
    r = client.post(
        "/v1/words/explain", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "words.0"


def test_explain_bodies_are_bounded(client: TestClient) -> None:
    too_many = {"words": ["hola"] * 1025, "vocab_lang": "es", "vocab_n_words": 10}
    assert error(client, 400, too_many)["param"] == "words"
    too_large = {"words": ["x" * 60] * 1100, "vocab_lang": "es", "vocab_n_words": 10}
    assert error(client, 413, too_large)["code"] == "request_too_large"


def test_explain_unknown_language_and_missing_token(client: TestClient) -> None:
    err = error(client, 404, {"words": ["a"], "vocab_lang": "xx", "vocab_n_words": 5})
    assert err["param"] == "vocab_lang" and err["code"] == "wordlist_not_found"
    assert client.post("/v1/words/explain", json={"words": ["a"]}).status_code == 401
    r = client.post(
        "/v1/words/explain", headers={**AUTH, "Content-Type": "application/json"}, content=b"{"
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


# ------------------------------------------------------------------------------------ the page


def test_page_and_its_files_are_served_without_the_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'data-testid="generate"' in page.text
    for name in (
        "app.js",
        "api.js",
        "batch.js",
        "composer.js",
        "generate.js",
        "ipa.js",
        "status.js",
        "text.js",
    ):
        r = client.get(f"/web/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere
    assert client.get("/web/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/web/nope.js").status_code == 404
    assert client.get("/web/__init__.py").status_code == 404
    assert client.get("/web/..%2Fapps.py").status_code == 404


def test_the_batch_app_serves_no_page(tmp_path: Path, smollm_tokenizer) -> None:
    app = create_batch_app(settings_for(tmp_path), engine=FakeEngine(smollm_tokenizer))
    with TestClient(app) as c:
        assert c.get("/").status_code == 404
        assert c.get("/v1/phonemes", headers=AUTH).status_code == 404
