"""The shipped lists hold no words of other languages, and their headword files are well formed.

Reads the files in wordlists/ directly (no wordfreq, no simplemma): these pin what
scripts/build_wordlists.py produced and what wordlists/README.md documents.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from wordlist_generation.constraints.wordlist.lists import normalize_word

WORDLISTS = Path(__file__).resolve().parents[2] / "wordlists"
LANGS = ("es", "en", "fr", "de", "it", "pt")
NON_ENGLISH = ("es", "fr", "de", "it", "pt")
SIZE = 50_000

#: English function words that leaked into the other languages' wordfreq tables (`the` was
#: 306th in Spanish, `of` 682nd, `and` 969th).
ENGLISH = tuple("the of and to you is that with this for it are have".split())
#: ... except where the same spelling is a word of the language itself.
ENGLISH_ALSO_NATIVE = {"pt": {"for"}}  # "se eu for": future subjunctive of ser / ir

#: Words that look English but belong to the language, with the rank they must stay within.
NATIVE = {
    "es": {"no": 50, "me": 50, "he": 500, "has": 1000, "come": 5000, "son": 100, "once": 5000,
           "use": 10_000},
    "fr": {"a": 50, "on": 50, "as": 500, "an": 500, "or": 500, "but": 500, "lot": 5000,
           "four": 5000, "case": 10_000},
    "de": {"was": 100, "will": 500, "also": 500, "so": 50, "her": 1000, "see": 5000,
           "still": 5000, "last": 5000, "not": 5000, "held": 5000},
    "it": {"come": 50, "con": 50, "non": 50, "per": 50, "do": 5000, "ago": 10_000},
    "pt": {"for": 500, "a": 10, "no": 50, "me": 50, "as": 50, "time": 1000},
}  # fmt: skip

#: Frequent function words of one language that leaked into another's table.
OTHER_LANGUAGES = {
    "en": ("que", "und", "das", "une", "ich", "não", "che"),
    "pt": ("el", "y", "con", "una", "pero", "muy"),
    "it": ("y", "los", "las", "les", "und"),
    "es": ("não", "est", "und"),
    "fr": ("und", "che", "uma"),
    "de": ("que", "est", "pour"),
}


@cache
def words(lang: str) -> tuple[str, ...]:
    return tuple((WORDLISTS / f"{lang}.txt").read_text(encoding="utf-8").split("\n")[:-1])


@cache
def ranks(lang: str) -> dict[str, int]:
    return {w: i for i, w in enumerate(words(lang))}


@cache
def lemma_file(lang: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(comment lines, [(lemma, forms)]) of wordlists/lemmas/<lang>.tsv."""
    raw = (WORDLISTS / "lemmas" / f"{lang}.tsv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    comments: list[str] = []
    entries: list[tuple[str, list[str]]] = []
    for line in raw.decode("utf-8").split("\n")[:-1]:
        if line.startswith("#"):
            assert not entries, "comments belong to the header"
            comments.append(line)
            continue
        lemma, forms = line.split("\t")
        entries.append((lemma, forms.split(" ")))
    return comments, entries


def lemma_rank(lang: str, lemma: str) -> tuple[int, list[str]]:
    """1-based rank of `lemma` among the headwords, and its forms."""
    for i, (head, forms) in enumerate(lemma_file(lang)[1], 1):
        if head == lemma:
            return i, forms
    raise AssertionError(f"{lemma!r} is not a headword of lemmas/{lang}.tsv")


# --- the word lists ----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_lists_keep_their_size(lang: str) -> None:
    assert len(words(lang)) == SIZE
    assert len(ranks(lang)) == SIZE


@pytest.mark.parametrize("lang", NON_ENGLISH)
def test_no_english_function_words_in_the_top_5000(lang: str) -> None:
    allowed = ENGLISH_ALSO_NATIVE.get(lang, set())
    leaked = {w: ranks(lang)[w] for w in ENGLISH if ranks(lang).get(w, SIZE) < 5000}
    assert set(leaked) <= allowed, leaked
    # Not further down either: they are dropped, not pushed below the cut.
    assert not {w for w in ENGLISH if w in ranks(lang)} - allowed


@pytest.mark.parametrize("lang", NON_ENGLISH)
def test_native_words_that_look_english_are_kept(lang: str) -> None:
    for word, within in NATIVE[lang].items():
        assert ranks(lang).get(word, SIZE) < within, (word, ranks(lang).get(word))


@pytest.mark.parametrize("lang", LANGS)
def test_no_function_words_of_other_languages(lang: str) -> None:
    assert not [w for w in OTHER_LANGUAGES[lang] if w in ranks(lang)]


def test_english_keeps_words_shared_with_other_languages() -> None:
    """The rule for English is conservative: names and loans written like foreign words stay."""
    for word in ("die", "de", "la", "los", "el", "von", "en", "con", "pour", "encore", "tempo"):
        assert word in ranks("en"), word


@pytest.mark.parametrize("lang", ["fr", "it"])
def test_elided_clitics_survive_the_cleaning(lang: str) -> None:
    top = words(lang)[:20]
    assert "l'" in top
    assert {"d'", "c'", "un'" if lang == "it" else "qu'"} <= set(ranks(lang))


# --- the headword files ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_lemma_file_header(lang: str) -> None:
    comments, entries = lemma_file(lang)
    header = "\n".join(comments)
    for needed in ("wordfreq ", "simplemma ", "lemmatize", "Rank", f"{lang}.txt"):
        assert needed in header, needed
    assert entries


@pytest.mark.parametrize("lang", LANGS)
def test_lemma_file_covers_the_list_in_rank_order(lang: str) -> None:
    _, entries = lemma_file(lang)
    rank = ranks(lang)
    heads = [lemma for lemma, _ in entries]
    assert len(set(heads)) == len(heads)
    covered: set[str] = set()
    for lemma, forms in entries:
        assert lemma and normalize_word(lemma) == lemma, lemma
        assert all(f in rank for f in forms), (lemma, [f for f in forms if f not in rank])
        assert [rank[f] for f in forms] == sorted(rank[f] for f in forms), lemma
        assert len(set(forms)) == len(forms), lemma
        covered.update(forms)
    assert covered == set(rank)


@pytest.mark.parametrize("lang", ["fr", "it"])
def test_clitics_are_their_own_headwords(lang: str) -> None:
    _, forms = lemma_rank(lang, "l'")
    assert forms == ["l'"]


def test_lemma_files_are_smaller_than_the_lists() -> None:
    for lang in LANGS:
        assert len(lemma_file(lang)[1]) < SIZE * 0.8, lang


def test_perro_is_a_frequent_spanish_headword() -> None:
    rank, forms = lemma_rank("es", "perro")
    assert {"perro", "perros"} <= set(forms)
    assert rank <= 1000


def test_spanish_verbs_gather_their_forms() -> None:
    _, comer = lemma_rank("es", "comer")
    assert {"comer", "come", "comen", "comido", "comiendo"} <= set(comer)
    rank, ser = lemma_rank("es", "ser")
    assert rank <= 20 and {"es", "son", "fue", "era", "sido"} <= set(ser)
    # `como` is simplemma's own lemma (the conjunction), not a form of comer.
    assert lemma_rank("es", "como")[1] == ["como"]


def test_cat_is_an_english_headword() -> None:
    rank, forms = lemma_rank("en", "cat")
    assert forms == ["cat", "cats"]
    # 1,255th: wordfreq counts cat + cats at 8.9e-5, and 1,254 headwords sum more (among them
    # 20 single letters, names such as john, london, george, and abbreviations).
    assert rank <= 1500


def test_german_headwords_are_lowercase_and_fold_sharp_s() -> None:
    _, entries = lemma_file("de")
    assert all(lemma == lemma.lower() and "ß" not in lemma for lemma, _ in entries)
    assert {"hund", "hunde"} <= set(lemma_rank("de", "hund")[1])
    assert {"strasse", "strassen"} <= set(lemma_rank("de", "strasse")[1])
