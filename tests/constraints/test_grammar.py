"""The answer grammar without any model or tokenizer: trie -> regex round trip, the automaton's
equivalence with the regex, separators, capitalization, clitics, and the plain-text functions."""

from __future__ import annotations

import random
import re

import pytest

from wordlist_generation.constraints.wordlist.automaton import AnswerAutomaton
from wordlist_generation.constraints.wordlist.check import (
    check,
    finalize,
    releasable,
    split_words,
)
from wordlist_generation.constraints.wordlist.grammar import (
    GrammarOptions,
    answer_regex,
    compile_words,
    lark_grammar,
    split_entries,
)
from wordlist_generation.constraints.wordlist.lists import (
    WordlistRegistry,
    capitalized,
    default_wordlist_dir,
)

N = 1000


@pytest.fixture(scope="module")
def registry() -> WordlistRegistry:
    return WordlistRegistry(default_wordlist_dir())


@pytest.fixture(scope="module")
def es(registry: WordlistRegistry):
    words = registry.get("es").top(N)
    cw = compile_words(words)
    return words, cw, AnswerAutomaton(cw), re.compile(answer_regex(cw))


@pytest.fixture(scope="module")
def fr(registry: WordlistRegistry):
    words = registry.get("fr").top(N)
    cw = compile_words(words)
    return words, cw, AnswerAutomaton(cw), re.compile(answer_regex(cw))


def _both(auto: AnswerAutomaton, rx: re.Pattern, text: str) -> bool:
    a = auto.accepts(text)
    assert a == bool(rx.fullmatch(text)), f"automaton and regex disagree on {text!r}"
    return a


# ------------------------------------------------------------------------------ round trip


def test_every_list_word_and_its_capitalized_form_matches(es) -> None:
    words, cw, _, _ = es
    full_rx = re.compile(cw.full_regex)
    for w in words:
        assert full_rx.fullmatch(w), w
        assert cw.full.contains(w), w
        cap = capitalized(w)
        if cap is not None:
            assert full_rx.fullmatch(cap), cap
            assert cw.full.contains(cap), cap


def test_words_beyond_n_and_random_non_words_do_not_match(es, registry) -> None:
    words, cw, auto, rx = es
    full_rx = re.compile(cw.full_regex)
    top = set(words)
    beyond = [w for w in registry.get("es").words[N : N + 2000] if w not in top]
    assert len(beyond) > 1500
    for w in beyond:
        assert not full_rx.fullmatch(w), w
        assert not cw.full.contains(w), w
        assert not _both(auto, rx, w), w
    rng = random.Random(7)
    alphabet = sorted(set("".join(words)))
    tried = 0
    while tried < 2000:
        w = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 8)))
        if w in top:
            continue
        tried += 1
        assert not full_rx.fullmatch(w), w
        assert not _both(auto, rx, w), w


def test_regex_is_factored_and_the_dawg_minimized(es) -> None:
    words, cw, _, _ = es
    # suffix sharing: far fewer DAWG nodes than characters, and a regex shorter than the words
    assert len(cw.full) < sum(len(w) for w in words) / 2
    assert len(cw.full_regex) < sum(len(w) + 1 for w in words)
    assert "[" in cw.full_regex and "(?:" in cw.full_regex


def test_split_entries_separates_clitics_and_drops_unusable_entries() -> None:
    full, clitics = split_entries(["l'", "homme", "qu'", "123", "", "a b", "x\x00", "don't", "l'"])
    assert full == ["homme", "don't"]
    assert clitics == ["l'", "qu'"]
    with pytest.raises(ValueError):
        compile_words(["l'", "123"])


# ------------------------------------------------------------------------------ the language

ACCEPTED_ES = [
    "hola",
    "Hola, ¿qué tal?",
    "¿Qué?",
    "¡Sí!",
    "¿¡Qué!?",
    "«Sí», dijo.",
    "« sí »",
    '"sí"',
    "sí...",
    "sí…",
    "no - sí",
    "no, — sí",
    "no\nsí",
    "no.\n\nSí.",
    "(sí)",
    "no: sí",
    "sí ?",
    "—¿Qué?",
    "y\n— sí",
]
REJECTED_ES = [
    "",
    " hola",
    "hola ",
    "hola  hola",
    "hola\tqué",
    "hola\n\n\nqué",
    "hola\n",
    "hola,qué",
    "hola.qué",
    "hola-qué",
    "HOLA",
    "hOla",
    "qué,,,,, sí",
    "¿¿¿qué",
    "1. hola",
    "hola 2",
    "hola #",
    "- hola",
    "hola\n- qué",
    "hola -",
    "¿",
    "hola ¿",
    "* hola",
    "hola — ",
    "xyzzy",
]


@pytest.mark.parametrize("text", ACCEPTED_ES)
def test_accepted_es(es, text: str) -> None:
    _, _, auto, rx = es
    assert _both(auto, rx, text)


@pytest.mark.parametrize("text", REJECTED_ES)
def test_rejected_es(es, text: str) -> None:
    _, _, auto, rx = es
    assert not _both(auto, rx, text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("l'homme", True),
        ("L'homme", True),
        ("l'Homme", True),
        ("qu'il", True),
        ("jusqu'à", True),
        ("l'", False),
        ("l' homme", False),
        ("l'homme l'", False),
        ("l'hommes'", False),
        ("« Bonjour ! » dit-il", False),  # `dit-il`: hyphen-joined words are not a list entry
        ("« Bonjour ! »", True),
        ("Quoi ?", True),
        ("c'est l'été.", True),
    ],
)
def test_french_clitics_and_spacing(fr, text: str, ok: bool) -> None:
    _, _, auto, rx = fr
    assert _both(auto, rx, text) == ok


def test_inner_punctuation_belongs_to_its_entry() -> None:
    auto = AnswerAutomaton(compile_words(["ee.uu", "ee", "don't", "e-mail", "uu"]))
    for ok in ["ee.uu", "Ee.uu", "ee. uu", "ee.uu.", "don't", "e-mail", "ee uu"]:
        assert auto.accepts(ok), ok
    for bad in ["ee.ee", "don'", "e-uu", "uu-ee", "ee.uu.uu"]:
        assert not auto.accepts(bad), bad


def test_capitalization_rules(registry) -> None:
    en = compile_words(registry.get("en").top(N))
    auto = AnswerAutomaton(en)
    assert auto.accepts("I think so.")
    assert auto.accepts("i think so")
    assert not auto.accepts("I THINK so")
    de = AnswerAutomaton(compile_words(["haus", "strasse", "ßx"]))
    assert de.accepts("Haus")
    assert not de.accepts("SSx")  # ß has no single-character capital
    assert capitalized("ß") is None and capitalized("Haus") is None and capitalized("é") == "É"


def test_options_change_the_language() -> None:
    words = ["hola", "qué", "tal"]
    base = AnswerAutomaton(compile_words(words))
    assert base.accepts("Hola\n\nqué tal")
    no_caps = AnswerAutomaton(compile_words(words, GrammarOptions(allow_capitalized=False)))
    assert not no_caps.accepts("Hola") and no_caps.accepts("hola")
    no_nl = AnswerAutomaton(compile_words(words, GrammarOptions(allow_newlines=False)))
    assert not no_nl.accepts("hola\nqué") and no_nl.accepts("hola qué")
    no_par = AnswerAutomaton(compile_words(words, GrammarOptions(allow_paragraphs=False)))
    assert no_par.accepts("hola\nqué") and not no_par.accepts("hola\n\nqué")
    tight = GrammarOptions(max_closing=1, space_before_closing=False)
    short = AnswerAutomaton(compile_words(words, tight))
    assert short.accepts("hola, qué.") and not short.accepts("hola... qué")
    assert not short.accepts("hola ,")
    assert hash(tight) != hash(GrammarOptions()) and tight == GrammarOptions(
        max_closing=1, space_before_closing=False
    )
    with pytest.raises(ValueError):
        GrammarOptions(max_opening=0)


def test_lark_grammar_names_each_piece_once(fr) -> None:
    _, cw, _, _ = fr
    lark = lark_grammar(cw)
    assert lark.count(cw.full_regex) == 1
    assert "CLITIC" in lark and '"no_forcing": true' in lark


def _random_answer(rng: random.Random, words: list[str]) -> str:
    gaps = [" ", ", ", ". ", "? ", "! ", "... ", " - ", ", — ", "\n", ".\n\n", ": «", " (",
            ") ", '" ', ' "', "; ", " ¿", "? ¿", "?! ", "… ", " » ", "\n— ", " ! "]  # fmt: skip
    leads = ["", "", "¿", "«", '"', "(", "— ", "¡¿"]
    tails = ["", "", ".", "?", "!", "...", "?!", '."', " !", "»"]
    out = [rng.choice(leads)]
    for i in range(rng.randint(1, 7)):
        if i:
            out.append(rng.choice(gaps))
        w = rng.choice(words)
        out.append(capitalized(w) or w if rng.random() < 0.2 else w)
    out.append(rng.choice(tails))
    return "".join(out)


def _mutate(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text) + 1)
    junk = rng.choice(["  ", "\t", "1", "#", "xq", "-", "'", "\n\n\n", ",,,,,", " ", "¿", "."])
    return text[:i] + junk + text[i:]


@pytest.mark.parametrize("lang", ["es", "fr", "it", "en"])
def test_automaton_equals_regex_on_random_strings(registry, lang: str) -> None:
    words = registry.get(lang).top(N)
    cw = compile_words(words)
    auto, rx = AnswerAutomaton(cw), re.compile(answer_regex(cw))
    rng = random.Random(lang)
    full = [w for w in words if not w.endswith("'")]
    accepted = rejected = 0
    for _ in range(400):
        text = _random_answer(rng, full)
        assert _both(auto, rx, text), text
        accepted += 1
        bad = _mutate(rng, text)
        rejected += not _both(auto, rx, bad)
    assert rejected > 200


# ------------------------------------------------------------------------------ text functions


def test_check_is_independent_and_reports_violations(es) -> None:
    words, _, _, _ = es
    allowed = frozenset(words)
    assert check("Hola, ¿qué tal? «Sí».", allowed) == []
    assert check("(sí) - no", allowed) == []
    bad = check("hola 123 xyzzy #", allowed)
    assert len(bad) == 3 and "'123'" in bad[0] and "xyzzy" in bad[1]
    assert check("HOLA", allowed) != []
    assert check("Hola", allowed, allow_capitalized=False) != []
    fr = frozenset(["l'", "homme", "qu'", "il", "aujourd'hui"])
    assert check("L'homme qu'il aujourd'hui", fr) == []
    assert check("l' homme", fr) != []  # a dangling clitic is not a word
    assert check("l'femme", fr) != []
    assert check("ee.uu.", frozenset(["ee.uu"])) == []


def test_split_words_matches_the_grammar_segmentation() -> None:
    allowed = frozenset(["l'", "homme", "ee.uu", "qué"])
    assert split_words("«L'homme», ¿qué? ee.uu.", allowed) == ["L'", "homme", "qué", "ee.uu"]
    assert split_words("« l'homme » - zz9!") == ["l'homme", "zz9"]


@pytest.mark.parametrize(
    ("text", "released", "final"),
    [
        ("Hola, ¿qu", "Hola,", "Hola,"),
        ("Hola, ¿qué", "Hola,", "Hola, ¿qué"),
        ("Hola, ", "Hola,", "Hola,"),
        ("hola - ", "hola", "hola"),
        ("hola - qu", "hola", "hola"),
        ("hola «", "hola", "hola"),
        ("l'hom", "", ""),
        ("qué l'", "qué", "qué"),
        ("qué ee.", "qué", "qué"),
        ("qué ee.uu.", "qué", "qué ee.uu."),
        ("qué !", "qué", "qué !"),
        ("qué\n\n", "qué", "qué"),
        ("", "", ""),
    ],
)
def test_releasable_and_finalize(text: str, released: str, final: str) -> None:
    allowed = frozenset(["hola", "qué", "l'", "homme", "ee.uu"])
    assert text[: releasable(text)] == released
    assert finalize(text, False, allowed) == final
    assert finalize(final, True, allowed) == final


def test_finalize_keeps_a_cut_word_that_is_itself_a_word() -> None:
    allowed = frozenset(["casa", "casas", "la"])
    assert finalize("la casa", False, allowed) == "la casa"  # heading for "casas", still a word
    assert finalize("la cas", False, allowed) == "la"


def test_stream_then_finalize_is_consistent_on_every_prefix(es) -> None:
    words, _, auto, _ = es
    allowed = frozenset(words)
    rng = random.Random(3)
    full = [w for w in words if not w.endswith("'")]
    for _ in range(60):
        text = _random_answer(rng, full)
        last = 0
        for k in range(len(text) + 1):
            prefix = text[:k]
            r = releasable(prefix)
            assert r >= last, (prefix, r, last)  # monotone
            assert text[:r] == prefix[:r]
            last = r
            out = finalize(prefix, k == len(text), allowed)
            assert out.startswith(prefix[:r]), (prefix, out)
            assert out == "" or auto.accepts(out), (prefix, out)
            assert check(out, allowed) == []
        assert finalize(text, True, allowed) == text
