"""Word-list normalization, loading, the registry, and the shipped lists themselves (no model)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import unicodedata
from pathlib import Path

import pytest

from wordlist_generation.constraints.wordlist.lists import (
    LANG_RE,
    EmptyWordlist,
    InvalidLanguage,
    Wordlist,
    WordlistError,
    WordlistNotFound,
    WordlistRegistry,
    clean_words,
    default_wordlist_dir,
    load_wordlist,
    normalize_word,
)

SHIPPED = ("es", "en", "fr", "de", "it", "pt")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _hash(words: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256(("\n".join(words) + "\n").encode("utf-8")).hexdigest()


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --- normalize_word -------------------------------------------------------------------------


def test_composed_and_decomposed_forms_are_one_word() -> None:
    composed = "caf\u00e9"
    decomposed = "cafe\u0301"
    assert composed != decomposed
    assert normalize_word(composed) == normalize_word(decomposed) == "caf\u00e9"
    assert unicodedata.is_normalized("NFC", normalize_word(decomposed))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hola", "hola"),
        ("ÉTÉ", "été"),
        ("  straße \t", "straße"),
        ("İstanbul", "istanbul"),
        ("DON\u2019T", "don't"),
        ("aujourd\u2019hui", "aujourd'hui"),
        ("l\u2019", "l'"),
    ],
)
def test_case_space_and_apostrophe_folding(raw: str, expected: str) -> None:
    assert normalize_word(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2020",
        "abc123",
        "x²",
        "½",
        "😀",
        "hola😀",
        "#",
        "a@b",
        "a_b",
        "€",
        "new york",
        "",
        "   ",
        "-",
        "'",
        "...",
        "a--b",
        "a'-b",
        "co\u200bche",
    ],
)
def test_non_words_are_dropped(raw: str) -> None:
    assert normalize_word(raw) is None


@pytest.mark.parametrize(
    "word", ["don't", "aujourd'hui", "e-mail", "ee.uu", "z.b", "col·lecció", "rock'n'roll"]
)
def test_inner_joiners_keep_the_word_whole(word: str) -> None:
    assert normalize_word(word) == word


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("¿qué?", "qué"),
        ("(hola)", "hola"),
        ("«mot»", "mot"),
        ("ee.uu.", "ee.uu"),
        ("-word-", "word"),
        ("'quoted'", "quoted"),
        ("end''", "end"),
    ],
)
def test_surrounding_punctuation_is_removed(raw: str, expected: str) -> None:
    assert normalize_word(raw) == expected


def test_a_final_apostrophe_marks_a_clitic() -> None:
    assert normalize_word("l'") == "l'"
    assert normalize_word("DELL\u2019") == "dell'"
    assert normalize_word("qu'") == "qu'"


def test_soft_hyphen_is_invisible() -> None:
    assert normalize_word("ex\u00adample") == "example"


@pytest.mark.parametrize("raw", ["Café", "cafe\u0301", "DON’T", "¿qué?", "l'", "ee.uu.", "x"])
def test_normalization_is_idempotent(raw: str) -> None:
    once = normalize_word(raw)
    assert once is not None
    assert normalize_word(once) == once


def test_clean_words_keeps_first_rank_of_duplicates() -> None:
    assert clean_words(["Casa", "perro", "casa", "CASA", "1x", "Perro", "gato"]) == [
        "casa",
        "perro",
        "gato",
    ]


def test_lang_re() -> None:
    for ok in ("es", "en", "pt-BR", "zh_Hant", "x1"):
        assert LANG_RE.match(ok)
    for bad in ("../etc", "es.txt", "a/b", "", "es\n", "é"):
        assert not LANG_RE.fullmatch(bad)


# --- loading ---------------------------------------------------------------------------------


def test_load_skips_comments_blank_lines_and_duplicates(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "xx.txt",
        "\ufeff# my list\r\n\r\nPerro 120\r\n  # indented comment\r\ngato\t80\r\n"
        "perro\r\n123\r\nCafe\u0301\r\ncafé\r\n",
    )
    wl = load_wordlist(path)
    assert wl.lang == "xx"
    assert wl.words == ("perro", "gato", "café")
    assert wl.sha256 == _hash(["perro", "gato", "café"])
    assert len(wl) == 3
    assert wl.path == path


def test_empty_after_cleaning_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "zz.txt", "# only a comment\n\n1234\n😀\n")
    _write(tmp_path / "yy.txt", "")
    registry = WordlistRegistry(tmp_path)
    for lang in ("zz", "yy"):
        with pytest.raises(EmptyWordlist) as info:
            registry.get(lang)
        assert info.value.lang == lang
        assert info.value.path.name == f"{lang}.txt"
        assert "no valid word" in str(info.value)
        assert isinstance(info.value, WordlistError)


def test_invalid_utf8_is_a_wordlist_error(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(WordlistError, match="UTF-8"):
        WordlistRegistry(tmp_path).get("bad")


def test_wordlist_top_and_hashes() -> None:
    words = ("de", "la", "que", "el")
    wl = Wordlist.from_words("es", words, Path("es.txt"))
    assert wl.top(2) == ("de", "la")
    assert wl.top(0) == ()
    assert wl.top(100) == words
    assert wl.sha256 == _hash(words)
    assert wl.sha256_top(2) == _hash(words[:2])
    assert wl.sha256_top(2) == wl.sha256_top(2)
    assert wl.sha256_top(4) == wl.sha256_top(99) == wl.sha256
    with pytest.raises(ValueError):
        wl.top(-1)


# --- registry --------------------------------------------------------------------------------


@pytest.fixture
def lists_dir(tmp_path: Path) -> Path:
    d = tmp_path / "lists"
    d.mkdir()
    _write(d / "es.txt", "de\nla\nque\n")
    _write(d / "en.txt", "the\nof\n")
    _write(d / "notes.md", "not a list\n")
    _write(d / "bad name.txt", "x\n")
    _write(tmp_path / "secret.txt", "password\n")
    return d


def test_languages_are_sorted_valid_txt_stems(lists_dir: Path) -> None:
    assert WordlistRegistry(lists_dir).languages() == ["en", "es"]
    assert WordlistRegistry(lists_dir / "missing").languages() == []


@pytest.mark.parametrize("lang", ["../secret", "es.txt", "a/b", "", "es\n", "/etc/passwd", ".."])
def test_invalid_language_never_touches_the_file_system(
    lists_dir: Path, lang: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = WordlistRegistry(lists_dir)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("file system touched")

    monkeypatch.setattr(os, "listdir", forbidden)
    monkeypatch.setattr(Path, "stat", forbidden)
    monkeypatch.setattr(Path, "read_text", forbidden)
    with pytest.raises(InvalidLanguage) as info:
        registry.get(lang)
    assert info.value.lang == lang


def test_not_found_lists_the_available_languages(lists_dir: Path) -> None:
    registry = WordlistRegistry(lists_dir)
    with pytest.raises(WordlistNotFound) as info:
        registry.get("fr")
    assert info.value.lang == "fr"
    assert info.value.available == ["en", "es"]
    assert "en, es" in str(info.value)
    with pytest.raises(WordlistNotFound):
        registry.get("ES")  # case-sensitive, even on a case-insensitive file system


def test_get_caches_and_reloads_a_changed_file(lists_dir: Path) -> None:
    registry = WordlistRegistry(lists_dir)
    first = registry.get("es")
    assert first.words == ("de", "la", "que")
    assert registry.get("es") is first
    _write(lists_dir / "es.txt", "de\nla\nque\nen\ny\n")
    second = registry.get("es")
    assert second.words == ("de", "la", "que", "en", "y")
    assert second.sha256 != first.sha256
    (lists_dir / "es.txt").unlink()
    with pytest.raises(WordlistNotFound):
        registry.get("es")


def test_concurrent_gets_share_one_instance(lists_dir: Path) -> None:
    registry = WordlistRegistry(lists_dir)
    results: list[Wordlist] = []
    lock = threading.Lock()

    def worker() -> None:
        wl = registry.get("en")
        with lock:
            results.append(wl)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r is results[0] for r in results)


def test_summary_matches_independent_hashes_and_hides_paths(lists_dir: Path) -> None:
    _write(lists_dir / "zz.txt", "# nothing\n")
    summary = WordlistRegistry(lists_dir).summary()
    by_lang = {entry["lang"]: entry for entry in summary}
    assert list(by_lang) == ["en", "es", "zz"]
    assert by_lang["es"]["n_words"] == 3
    assert by_lang["es"]["sha256"] == hashlib.sha256(b"de\nla\nque\n").hexdigest()
    assert by_lang["en"]["sha256"] == hashlib.sha256(b"the\nof\n").hexdigest()
    assert by_lang["es"]["file"] == "es.txt"
    assert by_lang["zz"]["n_words"] == 0 and by_lang["zz"]["sha256"] is None
    assert "no valid word" in by_lang["zz"]["error"]
    assert str(lists_dir) not in repr(summary)


# --- the shipped lists -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, Wordlist]:
    registry = WordlistRegistry(default_wordlist_dir())
    return {lang: registry.get(lang) for lang in SHIPPED}


def test_default_dir_is_the_repository_wordlists() -> None:
    assert default_wordlist_dir() == REPO_ROOT / "wordlists"
    assert set(SHIPPED) <= set(WordlistRegistry(default_wordlist_dir()).languages())


@pytest.mark.parametrize("lang", SHIPPED)
def test_shipped_list_is_large_normalized_and_unique(
    lang: str, shipped: dict[str, Wordlist]
) -> None:
    wl = shipped[lang]
    assert len(wl) >= 50_000
    raw = (default_wordlist_dir() / f"{lang}.txt").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert all(normalize_word(line) == line for line in lines)
    assert len(set(lines)) == len(lines)
    # Loading changes nothing, so the reported hash is the file's own hash.
    assert list(wl.words) == lines
    assert wl.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("lang", ["fr", "it"])
def test_french_and_italian_carry_elided_clitics(lang: str, shipped: dict[str, Wordlist]) -> None:
    words = set(shipped[lang].words)
    assert "l'" in words and "d'" in words and "c'" in words
    assert "l" not in words and "d" not in words and "c" not in words
    # A clitic ranks where the elided article does: among the most frequent words.
    assert "l'" in shipped[lang].top(20)


def test_french_clitics(shipped: dict[str, Wordlist]) -> None:
    words = set(shipped["fr"].words)
    for clitic in ("qu'", "j'", "n'", "s'", "m'", "t'", "jusqu'", "lorsqu'", "puisqu'"):
        assert clitic in words
    for bare in ("qu", "j", "n", "s", "m", "jusqu"):
        assert bare not in words
    for whole in ("homme", "il", "est", "accord", "aujourd'hui", "quelqu'un"):
        assert whole in words


def test_italian_clitics(shipped: dict[str, Wordlist]) -> None:
    words = set(shipped["it"].words)
    for clitic in ("dell'", "all'", "un'", "nell'", "dall'", "sull'", "quest'", "quell'"):
        assert clitic in words
    for word in ("anno", "altra", "inizio", "un", "po"):
        assert word in words
    # Compounds of a known clitic are split, not kept whole.
    assert "dell'anno" not in words and "all'inizio" not in words


def test_no_typographic_apostrophes_or_hyphen_forms(shipped: dict[str, Wordlist]) -> None:
    for wl in shipped.values():
        assert not any("\u2019" in w for w in wl.words)


def test_top_words_are_sane(shipped: dict[str, Wordlist]) -> None:
    assert {"de", "que"} <= set(shipped["es"].top(20))
    assert "the" in shipped["en"].top(20)
    assert {"der", "die", "und"} <= set(shipped["de"].top(20))
    assert {"de", "que", "não"} <= set(shipped["pt"].top(20))
    assert {"de", "la", "et"} <= set(shipped["fr"].top(20))
    assert {"di", "che", "il"} <= set(shipped["it"].top(20))


# --- the build script's re-segmentation (pure functions, no wordfreq data read) ---------------


@pytest.fixture(scope="module")
def build_script():
    spec = importlib.util.spec_from_file_location(
        "build_wordlists", REPO_ROOT / "scripts" / "build_wordlists.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the class is being created.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_segment_splits_known_clitics_only(build_script) -> None:
    fr, it = build_script.ELISIONS["fr"], build_script.ELISIONS["it"]
    seg = build_script.segment
    assert list(seg("l", fr)) == ["l'"]
    assert list(seg("t", fr)) == ["t"]  # shared: the clitic is added by the caller
    assert list(seg("jusqu'à", fr)) == ["jusqu'", "à"]
    assert list(seg("aujourd'hui", fr)) == ["aujourd'hui"]
    assert list(seg("dell'anno", it)) == ["dell'", "anno"]
    assert list(seg("dell'un'altra", it)) == ["dell'", "un'", "altra"]
    assert list(seg("un", it)) == ["un"]
    assert list(seg("don't", None)) == ["don't"]
    assert build_script.is_web_address("gmail.com") and not build_script.is_web_address("ee.uu")
    assert build_script.is_latin("œuvre") and not build_script.is_latin("москва")
