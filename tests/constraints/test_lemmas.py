"""Headword (lemma) units: the lemma file, the allowed forms, the compiled constraint, the API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakes import AUTH
from wordcheck import violations

from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.wordlist import WordlistRegistry
from wordlist_generation.constraints.wordlist.compile import wordlist_compiler
from wordlist_generation.constraints.wordlist.lemmas import LemmaListNotFound, load_lemmas
from wordlist_generation.errors import InvalidRequest
from wordlist_generation.protocol import constraint_spec

WORDS = ["el", "la", "perro", "de", "perros", "come", "gato", "comer", "gatos", "casa", "bajo"]
LEMMAS = """# test headwords
el\tel la
de\tde
comer\tcome comer comes
perro\tperro perros
bajo\tbajo
casa\tcasa
gato\tgato gatos
bajar\tbajo
"""


def bad_words(report) -> list[str]:
    return [v.rsplit(": ", 1)[1].strip("'") for v in report.violations]


@pytest.fixture
def lists_dir(tmp_path: Path) -> Path:
    (tmp_path / "es.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    (tmp_path / "lemmas").mkdir()
    (tmp_path / "lemmas" / "es.tsv").write_text(LEMMAS, encoding="utf-8")
    (tmp_path / "en.txt").write_text("the\ncat\n", encoding="utf-8")  # no lemma file
    return tmp_path


def test_lemma_file_forms_are_list_entries_in_rank_order(lists_dir: Path) -> None:
    registry = WordlistRegistry(lists_dir)
    lemmas = registry.lemmas("es")
    assert lemmas.lemmas[:4] == ("el", "de", "comer", "perro")
    assert lemmas.forms[2] == ("come", "comer")  # `comes` is not in the list: dropped
    assert lemmas.top_forms(4) == ("el", "la", "perro", "de", "perros", "come", "comer")
    # `bajo` is a headword of its own (5th) and a form of `bajar` (8th): allowed by either.
    assert lemmas.lemmas_of("bajo") == [(5, "bajo"), (8, "bajar")]
    assert lemmas.form_ranks()["bajo"] == 5
    assert registry.lemmas("es") is lemmas  # cached until a file changes
    with pytest.raises(LemmaListNotFound):
        registry.lemmas("en")


def test_a_lemma_file_without_listed_forms_is_refused(lists_dir: Path) -> None:
    (lists_dir / "lemmas" / "es.tsv").write_text("zzz\tzzz\n", encoding="utf-8")
    registry = WordlistRegistry(lists_dir)
    with pytest.raises(Exception, match="no headword"):
        load_lemmas(lists_dir / "lemmas" / "es.tsv", registry.get("es"))


def test_lemma_spec_compiles_every_form_of_the_allowed_headwords(
    lists_dir: Path, smollm_tokenizer
) -> None:
    compiler = wordlist_compiler(
        smollm_tokenizer, WordlistRegistry(lists_dir), background_warm=False
    )
    lemma = compiler.compile(WordlistSpec("es", 4, "lemma")).constraint
    word = compiler.compile(WordlistSpec("es", 4)).constraint
    assert bad_words(lemma.check("El perro y los perros")) == ["y", "los"]
    assert bad_words(lemma.check("El perro come. Los perros comen.")) == ["Los", "comen"]
    assert bad_words(word.check("los perros")) == ["los", "perros"]  # `perros` is 5th
    assert lemma.describe()["vocab_unit"] == "lemma"
    assert lemma.describe()["vocab_n_words"] == 4 and lemma.describe()["allowed_forms"] == 7
    assert word.describe()["vocab_unit"] == "word" and "allowed_forms" not in word.describe()
    assert lemma.accepts("el perro come") and not lemma.accepts("el gato")


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        (WordlistSpec("es", 9, "lemma"), "vocab_n_words"),  # 8 headwords
        (WordlistSpec("en", 1, "lemma"), "vocab_unit"),  # no lemma file
    ],
)
def test_impossible_lemma_specs_are_400s_naming_the_field(
    lists_dir: Path, smollm_tokenizer, spec: WordlistSpec, param: str
) -> None:
    compiler = wordlist_compiler(
        smollm_tokenizer, WordlistRegistry(lists_dir), background_warm=False
    )
    with pytest.raises(InvalidRequest) as err:
        compiler.compile(spec)
    assert err.value.param == param


@pytest.mark.parametrize(
    ("args", "unit", "param"),
    [
        (("es", 10, None), "headword", "vocab_unit"),
        ((None, None, None), "lemma", "vocab_unit"),
        (("en", None, [{"type": "exclude", "phonemes": ["r"]}]), "lemma", "vocab_unit"),
    ],
)
def test_bad_units_are_400s_naming_vocab_unit(args, unit, param) -> None:
    with pytest.raises(InvalidRequest) as err:
        constraint_spec(*args, vocab_unit=unit)
    assert err.value.param == param


def test_lemma_unit_through_the_api(lists_dir: Path, make_client) -> None:
    engine_reply = "El perro come. Los perros"
    client, engine = make_client(WORDLIST_DIR=str(lists_dir))
    engine.reply = engine_reply
    body = {
        "model": engine.model_id,
        "messages": [{"role": "user", "content": "hola"}],
        "max_tokens": 16,
        "vocab_lang": "es",
        "vocab_n_words": 4,
        "vocab_unit": "lemma",
    }
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    info = r.json()["constraint"]
    assert (info["vocab_unit"], info["vocab_n_words"], info["allowed_forms"]) == ("lemma", 4, 7)
    assert info["violations"] == ["not in the word list: 'Los'"]  # the fake ignores masks
    assert info["compliant"] is False

    bad = client.post("/v1/chat/completions", json={**body, "vocab_unit": "forms"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "vocab_unit"

    listed = client.get("/v1/wordlists", headers=AUTH).json()["data"]
    es = next(e for e in listed if e["lang"] == "es")
    en = next(e for e in listed if e["lang"] == "en")
    assert es["units"] == ["word", "lemma"] and es["n_lemmas"] == 8
    assert en["units"] == ["word"] and "n_lemmas" not in en

    explained = client.post(
        "/v1/words/explain",
        json={"words": ["perros", "gatos", "bajo"], "vocab_lang": "es", "vocab_n_words": 4,
              "vocab_unit": "lemma"},
        headers=AUTH,
    ).json()
    assert explained["unit"] == "lemma" and explained["list_size"] == 8
    perros, gatos, bajo = explained["data"]
    assert perros["allowed"] and perros["lemma"] == "perro" and perros["rank"] == 4
    assert not gatos["allowed"] and gatos["lemma"] == "gato"
    assert "headword 5" in bajo["reason"]


def test_shipped_lemma_lists_allow_perro_and_perros_at_1000(smollm_tokenizer) -> None:
    registry = WordlistRegistry(Path(__file__).resolve().parents[2] / "wordlists")
    compiler = wordlist_compiler(smollm_tokenizer, registry, background_warm=False)
    t0 = time.perf_counter()
    constraint = compiler.compile(WordlistSpec("es", 1000, "lemma")).constraint
    assert time.perf_counter() - t0 < 30  # generous: this is not a benchmark
    report = constraint.check("El perro y los perros")
    assert report.ok, report.violations
    assert violations("El perro y los perros", "es", 1000, unit="lemma") == []

