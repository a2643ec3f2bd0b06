"""Phonological constraints without a model: validation, CSP, grammar plan, re-check.

Decoding (grammar replay, masks, steering) is in `test_phonology_decoding.py`, the compile
handler in `test_phonology_handler.py`.
"""

from __future__ import annotations

from typing import Any

import pytest
from phonology_cases import DZ_FINAL_SHORT, NO_R_NO_L_TWO_S, compiled

from wordlist_generation import errors
from wordlist_generation.constraints import base
from wordlist_generation.constraints.phonology import (
    BudgetTooSmall,
    Lexicon,
    Requirements,
    UnsatisfiableConstraint,
    UnsupportedBackend,
    cache_key,
    check_text,
    expand_exclusion,
    inventory_description,
    lark_grammar,
    parse_constraints,
    preview,
    require_llguidance,
    solve,
)
from wordlist_generation.constraints.phonology.phonemes import INVENTORY
from wordlist_generation.constraints.spec import PhonologicalSpec
from wordlist_generation.constraints.tokenizer import TokenizerTables

# ----------------------------------------------------------------------------- validation


BAD_INPUTS = [
    ("unknown type", [{"type": "rhyme", "phonemes": ["s"]}], ["rhyme", "exclude"]),
    ("unknown phoneme", [{"type": "exclude", "phonemes": ["s", "x"]}], ["'x'", "inventory", "ɹ"]),
    (
        "unknown phoneme in pair",
        [{"type": "contrastive_minpair", "phoneme1": "q", "phoneme2": "d"}],
        ["'q'", "phoneme1"],
    ),
    ("empty phoneme list", [{"type": "exclude", "phonemes": []}], ["phonemes", "at least 1"]),
    ("empty include list", [{"type": "include", "phonemes": []}], ["phonemes"]),
    (
        "empty targets",
        [{"type": "contrastive_multopp", "substitute": "t", "targets": []}],
        ["targets"],
    ),
    (
        "min above max",
        [{"type": "bound", "norm": "zipf", "min_value": 5, "max_value": 3}],
        ["above max_value"],
    ),
    ("no bound given", [{"type": "bound", "norm": "letters"}], ["min_value"]),
    ("bad norm", [{"type": "bound", "norm": "vowels", "max_value": 3}], ["norm"]),
    (
        "bad position",
        [{"type": "include", "phonemes": ["s"], "position": "middle"}],
        ["position", "initial"],
    ),
    ("min_count zero", [{"type": "include", "phonemes": ["s"], "min_count": 0}], ["min_count"]),
    (
        "same phonemes",
        [{"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "d"}],
        ["both /d/"],
    ),
    (
        "maxopp vowel",
        [{"type": "contrastive_maxopp", "phoneme1": "iː", "phoneme2": "m"}],
        ["not a consonant"],
    ),
    (
        "maxopp two obstruents",
        [{"type": "contrastive_maxopp", "phoneme1": "p", "phoneme2": "z"}],
        ["sonorant_diff"],
    ),
    (
        "maxopp too close",
        [{"type": "contrastive_maxopp", "phoneme1": "d", "phoneme2": "n"}],
        ["min_feature_distance"],
    ),
    (
        "n_targets too big",
        [{"type": "contrastive_multopp", "substitute": "t", "targets": ["k", "s"], "n_targets": 3}],
        ["n_targets"],
    ),
    (
        "substitute in targets",
        [{"type": "contrastive_multopp", "substitute": "t", "targets": ["t", "k"]}],
        ["substitute"],
    ),
    ("unknown field", [{"type": "exclude", "phonemes": ["s"], "weight": 2}], ["weight"]),
    (
        "negative weight",
        [{"type": "bound_boost", "norm": "zipf", "min_value": 4, "weight": -1}],
        ["weight"],
    ),
]


@pytest.mark.parametrize(("case", "raw", "fragments"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_table(case: str, raw: list[dict], fragments: list[str]) -> None:
    with pytest.raises(errors.InvalidConstraint) as exc:
        parse_constraints(raw)
    text = str(exc.value)
    for frag in fragments:
        assert frag in text, (case, frag, text)
    assert (exc.value.param or "").startswith("constraints.0"), exc.value.param


@pytest.mark.parametrize(
    ("raw", "prefix", "param"),
    [
        (
            [{"type": "exclude", "phonemes": ["s"]}, {"type": "exclude", "phonemes": ["x"]}],
            "constraints",
            "constraints.1.phonemes.0",
        ),
        ([{"type": "rhyme"}], "constraints", "constraints.0.type"),
        ([{"phonemes": ["s"]}], "constraints", "constraints.0.type"),
        ([{"type": "include", "phonemes": ["s"], "min_count": 0}], "x", "x.0.min_count"),
        ([], "constraints", "constraints"),
        ({"type": "exclude"}, "body.constraints", "body.constraints"),
    ],
)
def test_error_locations_name_the_field(raw: Any, prefix: str, param: str) -> None:
    with pytest.raises(errors.InvalidConstraint) as exc:
        parse_constraints(raw, prefix)
    assert exc.value.param == param
    assert exc.value.status_code == 400 and exc.value.code == "invalid_constraint"


def test_valid_inputs_are_normalized() -> None:
    ex, pair, mult = parse_constraints(
        [
            {"type": "exclude", "phonemes": ["r", "ɹ", "l"]},
            {"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s", "position": "initial"},
            {"type": "contrastive_multopp", "substitute": "t", "targets": ["k", "s", "sh"]},
        ]
    )
    assert ex.phonemes == ("ɹ", "l")
    assert ex.effective_phonemes == ("ɹ", "l", "ɚ", "ɝ")
    assert pair.features["feature_distance"] == 3
    assert mult.targets == ("k", "s", "ʃ") and mult.n_targets == 3


def test_models_are_frozen_hashable_values() -> None:
    a = parse_constraints(NO_R_NO_L_TWO_S + DZ_FINAL_SHORT)
    b = parse_constraints(
        [{"type": "exclude", "phonemes": ("ɹ", "l", "r")}, *NO_R_NO_L_TWO_S[1:], *DZ_FINAL_SHORT]
    )
    assert isinstance(a, tuple) and a == b and hash(a) == hash(b)
    assert PhonologicalSpec(a, 1000) == PhonologicalSpec(b, 1000)
    assert len({PhonologicalSpec(a), PhonologicalSpec(b), PhonologicalSpec(a, 1000)}) == 2
    with pytest.raises(ValueError):
        a[0].phonemes = ("s",)
    assert a[0].model_dump(mode="json")["phonemes"] == ["ɹ", "l"]  # JSON shape unchanged


LABELS = [
    ({"type": "exclude", "phonemes": ["r", "l"]}, "exclude /ɹ l ɚ ɝ/"),
    (NO_R_NO_L_TWO_S[1], "include 2× /s/ initial"),
    (DZ_FINAL_SHORT[1], "bound syllables ≤ 2"),
    (
        {"type": "bound_boost", "norm": "zipf", "min_value": 4.5, "weight": 2},
        "bound_boost 4.5 ≤ zipf",
    ),
    (DZ_FINAL_SHORT[0], "contrastive_minpair /d/~/z/ final"),
    (
        {"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s"},
        "contrastive_maxopp /m/~/s/ any",
    ),
    (
        {
            "type": "contrastive_multopp",
            "substitute": "t",
            "targets": ["k", "s", "sh"],
            "n_targets": 2,
        },
        "contrastive_multopp /t/ vs 2 of /k s ʃ/ any",
    ),
]


@pytest.mark.parametrize(("raw", "label"), LABELS, ids=[c[0]["type"] for c in LABELS])
def test_labels_name_the_normalized_constraint(raw: dict, label: str) -> None:
    """Labels appear in error messages, stages and reports: tuples render like the old lists."""
    (c,) = parse_constraints([raw])
    assert c.label() == label


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(errors.InvalidConstraint) as exc:
        parse_constraints([{"type": "rhyme"}])
    assert exc.value.message.startswith("unknown constraint type 'rhyme'")
    for known in ("exclude", "include", "bound_boost", "contrastive_multopp"):
        assert f"'{known}'" in exc.value.message


def test_inventory_description_partitions_the_inventory() -> None:
    inv = inventory_description()
    assert set(inv["vowels"]).isdisjoint(inv["consonants"])
    assert sorted(inv["vowels"] + inv["consonants"]) == sorted(INVENTORY)
    assert "ɹ" in inv["consonants"] and "ɚ" in inv["vowels"]


# ----------------------------------------------------------------------------- unary constraints


def test_exclude_r_removes_rhotic_vowels(lexicon: Lexicon) -> None:
    sol = solve(lexicon, parse_constraints([{"type": "exclude", "phonemes": ["r"]}]))
    allowed = set(sol.allowed_words)
    for w in ("red", "bird", "butter", "her", "car"):
        assert w not in allowed, w
    for w in ("bead", "cat", "the", "sun"):
        assert w in allowed, w
    banned = expand_exclusion(["ɹ"])
    rows = lexicon.frame.filter(lexicon.frame["word"].is_in(list(sol.allowed_words)))
    assert all(not banned & {p for pr in prons for p in pr} for prons in rows["prons"].to_list())


def test_exclude_checks_every_pronunciation(lexicon: Lexicon) -> None:
    # "the" is /ðə/, /ðʌ/ or /ðiː/; excluding /iː/ must drop it even though the first form lacks it.
    sol = solve(lexicon, parse_constraints([{"type": "exclude", "phonemes": ["i"]}]))
    assert "the" not in sol.allowed_words


def test_bound_filters_every_word(lexicon: Lexicon) -> None:
    sol = solve(
        lexicon,
        parse_constraints(
            [
                {"type": "bound", "norm": "syllables", "max_value": 1},
                {"type": "bound", "norm": "zipf", "min_value": 4.5},
                {"type": "bound", "norm": "letters", "min_value": 3, "max_value": 5},
            ]
        ),
    )
    f = lexicon.frame.filter(lexicon.frame["word"].is_in(list(sol.allowed_words)))
    assert f["n_syllables"].max() == 1
    assert f["zipf"].min() >= 4.5
    assert 3 <= f["n_letters"].min() and f["n_letters"].max() <= 5
    assert [s["stage"] for s in sol.stages][0] == "lexicon"
    assert [s["constraint_index"] for s in sol.stages[1:]] == [0, 1, 2]
    sizes = [s["size"] for s in sol.stages]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == sol.n_allowed


def test_vocab_n_words(lexicon: Lexicon) -> None:
    sol = solve(
        lexicon, parse_constraints([{"type": "exclude", "phonemes": ["s"]}]), vocab_n_words=1000
    )
    assert sol.base_size == 1000 and sol.n_allowed < 1000
    assert set(sol.allowed_words) <= set(lexicon.arrays.words[:1000])
    assert sol.vocabulary_json()["vocab_n_words"] == 1000


def test_bound_boost_is_soft(lexicon: Lexicon) -> None:
    c = parse_constraints(
        [{"type": "bound_boost", "norm": "syllables", "max_value": 1, "weight": 2}]
    )
    sol = solve(lexicon, c)
    assert sol.n_allowed == lexicon.size and len(sol.soft) == 1
    short = check_text("The cat sat on a mat.", sol, lexicon)[1]
    long = check_text("Elephants are enormous animals.", sol, lexicon)[1]
    assert short.soft and short.ok and long.ok
    assert short.details["score"] == 2.0 and long.details["score"] < 1.0


def test_survival_warnings(lexicon: Lexicon) -> None:
    mild = solve(
        lexicon, parse_constraints([{"type": "exclude", "phonemes": ["r", "l", "s", "t"]}])
    )
    assert mild.warning is not None and mild.warning["level"] == "warning"
    strong = solve(
        lexicon,
        parse_constraints([{"type": "exclude", "phonemes": ["r", "l", "s", "t", "n", "d", "k"]}]),
    )
    assert strong.survival < 0.05 and strong.warning["level"] == "strong"  # type: ignore[index]
    fine = solve(lexicon, parse_constraints([{"type": "exclude", "phonemes": ["ʒ"]}]))
    assert fine.warning is None


# ----------------------------------------------------------------------------- positive constraints


@pytest.mark.parametrize(
    ("position", "inside", "outside"),
    [
        ("initial", ["see", "sun", "city"], ["bus", "last", "bees"]),
        ("final", ["bus", "yes", "nice"], ["see", "last"]),
        ("medial", ["last", "basket", "also"], ["see", "bus"]),
        ("any", ["see", "bus", "last"], ["bees", "cat"]),
    ],
)
def test_include_positions(
    lexicon: Lexicon, position: str, inside: list[str], outside: list[str]
) -> None:
    sol = solve(
        lexicon, parse_constraints([{"type": "include", "phonemes": ["s"], "position": position}])
    )
    (slot,) = sol.slots
    targets = set(slot.target_words)
    assert all(w in targets for w in inside), position
    assert not any(w in targets for w in outside), position
    assert slot.domain_sizes["target_words"] == len(targets)


def test_include_domain_is_filtered_by_unary_constraints(lexicon: Lexicon) -> None:
    sol = solve(lexicon, parse_constraints(NO_R_NO_L_TWO_S))
    (slot,) = sol.slots
    assert "sleep" not in slot.target_words and "see" in slot.target_words
    assert set(slot.target_words) <= set(sol.allowed_words)
    assert slot.trace[0]["size"] > slot.trace[-1]["size"] == len(slot.target_words)
    assert len(slot.chosen) == 2


def test_minimal_pair_bead_bees(lexicon: Lexicon) -> None:
    sol = solve(lexicon, parse_constraints(DZ_FINAL_SHORT), top_k=5000)
    (slot,) = sol.slots
    pairs = {c.words for c in slot.candidates}
    assert ("bead", "bees") in pairs
    assert ("had", "has") in pairs
    assert slot.n_solutions == len(slot.candidates) > 100
    best = slot.candidates[0]
    assert (
        best.prons[0][-1] == "d"
        and best.prons[1][-1] == "z"
        and best.prons[0][:-1] == best.prons[1][:-1]
    )
    scores = [c.score for c in slot.candidates]
    assert scores == sorted(scores, reverse=True)  # ranked by the rarer word's frequency
    for c in slot.candidates:
        assert all(w in set(sol.allowed_words) for w in c.words)


@pytest.mark.parametrize(
    ("position", "pair"),
    [("initial", ("den", "zen")), ("medial", ("raiding", "raising"))],
)
def test_minimal_pair_positions(lexicon: Lexicon, position: str, pair: tuple[str, str]) -> None:
    c = [{"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": position}]
    sol = solve(lexicon, parse_constraints(c), top_k=5000)
    assert pair in {cand.words for cand in sol.slots[0].candidates}


def test_maximal_opposition(lexicon: Lexicon) -> None:
    c = [{"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s", "position": "initial"}]
    sol = solve(lexicon, parse_constraints(c), top_k=5000)
    (slot,) = sol.slots
    # "matt" is the more frequent spelling of /mæt/; "mat" rides along as a homophone
    assert any("mat" in c.spellings[0] and c.words[1] == "sat" for c in slot.candidates)
    report = slot.to_json(3)
    assert report["feature_difference"]["feature_distance"] == 3
    assert report["feature_difference"]["sonorant_diff"] == 1


def test_multiple_opposition(lexicon: Lexicon) -> None:
    c = [
        {
            "type": "contrastive_multopp",
            "substitute": "t",
            "targets": ["k", "s", "ʃ"],
            "position": "initial",
        }
    ]
    sol = solve(lexicon, parse_constraints(c), top_k=5000)
    (slot,) = sol.slots
    sets = {cand.words for cand in slot.candidates}
    assert ("tea", "key", "see", "she") in sets or any(s[0] == "tea" for s in sets)
    for cand in slot.candidates:
        assert len(set(cand.phonemes)) == 4 and cand.phonemes[0] == "t"
        assert len({p[1:] for p in cand.prons}) == 1  # identical except the first phoneme
    two = [
        {
            "type": "contrastive_multopp",
            "substitute": "t",
            "targets": ["k", "s", "ʃ"],
            "n_targets": 2,
        }
    ]
    assert solve(lexicon, parse_constraints(two)).slots[0].n_solutions > slot.n_solutions


def test_impossible_contrast_is_unsatisfiable(lexicon: Lexicon) -> None:
    c = [{"type": "contrastive_minpair", "phoneme1": "ŋ", "phoneme2": "h", "position": "initial"}]
    with pytest.raises(UnsatisfiableConstraint) as exc:
        solve(lexicon, parse_constraints(c))
    err = exc.value
    assert err.constraint_index == 0
    assert "lexicon has 0 minimal pairs" in err.message
    assert err.domain_sizes["phoneme1_words"] == 0 and err.domain_sizes["pairs"] == 0
    assert err.domain_sizes["phoneme2_words"] > 100


def test_exclusion_that_empties_a_contrast_names_both(lexicon: Lexicon) -> None:
    c = [
        {"type": "exclude", "phonemes": ["d"]},
        {"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"},
    ]
    with pytest.raises(UnsatisfiableConstraint) as exc:
        solve(lexicon, parse_constraints(c))
    err = exc.value
    assert err.constraint_index == 0  # the exclusion emptied the pair domain
    assert "constraint 0 (exclude /d/) emptied the domain of constraint 1" in err.message
    assert err.domain_sizes["lexicon"] > 0 and err.domain_sizes["constraint 0 (exclude /d/)"] == 0
    assert err.domain_sizes["phoneme1_words"] == 0


def test_empty_vocabulary_is_unsatisfiable(lexicon: Lexicon) -> None:
    vowels = [
        "ɑ",
        "æ",
        "ʌ",
        "ə",
        "ɔ",
        "aʊ",
        "aɪ",
        "ɛ",
        "ɝ",
        "ɚ",
        "eɪ",
        "ɪ",
        "iː",
        "oʊ",
        "ɔɪ",
        "ʊ",
        "uː",
    ]
    with pytest.raises(UnsatisfiableConstraint) as exc:
        solve(lexicon, parse_constraints([{"type": "exclude", "phonemes": vowels}]))
    assert exc.value.constraint_index == 0 and "no allowed word" in exc.value.message


def test_include_min_count_above_domain(lexicon: Lexicon) -> None:
    c = [
        {"type": "bound", "norm": "zipf", "min_value": 7},
        {"type": "include", "phonemes": ["ʒ"], "min_count": 1},
    ]
    with pytest.raises(UnsatisfiableConstraint) as exc:
        solve(lexicon, parse_constraints(c))
    assert exc.value.constraint_index == 0 and exc.value.domain_sizes["target_words"] == 0


def test_preview_shapes(lexicon: Lexicon) -> None:
    ok = preview(lexicon, parse_constraints(DZ_FINAL_SHORT), top_k=3)
    assert ok["satisfiable"] is True
    assert set(ok["vocabulary"]) >= {"allowed", "base", "lexicon_size", "survival", "warning"}
    (req,) = ok["required"]
    assert len(req["candidates"]) == 3 and req["domain_sizes"]["pairs"] == req["n_solutions"]
    assert ok["required_words"] == req["chosen"]
    assert ok["elapsed_ms"] < 2000
    bad = preview(
        lexicon,
        parse_constraints([{"type": "exclude", "phonemes": ["z"]}, *DZ_FINAL_SHORT[:1]]),
    )
    assert bad["satisfiable"] is False
    assert bad["unsatisfiable"]["constraint_index"] == 0
    assert bad["vocabulary"]["allowed"] > 0 and "stages" in bad


def test_cache_key(lexicon: Lexicon) -> None:
    a = parse_constraints(DZ_FINAL_SHORT)
    b = parse_constraints([{**DZ_FINAL_SHORT[0], "phoneme2": "z"}, DZ_FINAL_SHORT[1]])
    assert cache_key(lexicon, a, None) == cache_key(lexicon, b, None)
    assert cache_key(lexicon, a, None) != cache_key(lexicon, a, 5000)
    assert solve(lexicon, a).key == cache_key(lexicon, a, None)


# ----------------------------------------------------------------------------- grammar


def test_grammar_is_the_vocabulary_only(lexicon: Lexicon) -> None:
    """One flat repetition of allowed words: no rule parameters, whatever the requirements."""
    sol = solve(lexicon, parse_constraints(NO_R_NO_L_TWO_S + DZ_FINAL_SHORT[:1]), top_k=3)
    grammar = lark_grammar(sol.allowed_words)
    assert "start: LEAD? WORD (SEP WORD)* END?" in grammar
    assert "%if" not in grammar and "::" not in grammar
    assert grammar == lark_grammar(
        solve(lexicon, parse_constraints(NO_R_NO_L_TWO_S[:1])).allowed_words
    )


def test_requirements_count_any_target_word_and_any_kept_candidate(lexicon: Lexicon) -> None:
    sol = solve(lexicon, parse_constraints(NO_R_NO_L_TWO_S + DZ_FINAL_SHORT[:1]), top_k=3)
    req = Requirements(sol)
    include, pair = req.needs
    assert req.chosen == tuple(sol.required_words())
    assert include.offered[:2] == sol.slots[0].chosen and include.min_count == 2
    # any two distinct /s/-initial words, chosen or not; the same word twice counts once
    assert include.satisfied({"seven", "sun"}) and not include.satisfied({"so"})
    first, second = (c.words for c in sol.slots[1].candidates[:2])
    assert pair.satisfied(set(first)) and pair.satisfied(set(second))
    assert not pair.satisfied({first[0], second[1]})
    assert pair.suggestions({first[0]}) == (first[1],)  # the candidate already half written
    assert req.pending(set()) == req.chosen
    assert req.pending({*req.chosen}) == ()
    assert req.satisfied({"seven", "sun", *first}) and not req.satisfied({"seven", *first})


def test_many_required_words_compile(lexicon: Lexicon, tables: TokenizerTables) -> None:
    """80 required words (no bit budget any more): the token budget is what limits them."""
    c = [{"type": "include", "phonemes": [p], "min_count": 16} for p in ["s", "t", "n", "k", "m"]]
    pc = compiled(lexicon, tables, c)
    need = pc.min_tokens_to_satisfy()
    assert 16 <= need <= 80  # a word may serve two slots ("stem": /s/ and /m/)
    pc.check_budget(need)
    with pytest.raises(BudgetTooSmall):
        pc.check_budget(need - 1)


# ----------------------------------------------------------------------------- re-check, text handling


def test_check_reports_required_words_and_cut_answers(
    lexicon: Lexicon, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    good = pc.check("The cat has had a nap.")
    assert good.ok and not good.violations
    assert good.details["required_words"] == {"had": True, "has": True}
    cut = pc.check("The cat has")
    assert not cut.ok
    pair = next(v for v in cut.details["verdicts"] if v["type"] == "contrastive_minpair")
    assert pair["ok"] is False and pair["details"]["missing"] == ["had"]
    other = pc.check("He said she says so.")  # any minimal pair counts, not only the suggested one
    assert other.ok


def test_check_is_independent_of_the_frame(lexicon: Lexicon) -> None:
    sol = solve(lexicon, parse_constraints(NO_R_NO_L_TWO_S))
    verdicts = {v.type: v for v in check_text("The red bird saw seven cats.", sol, lexicon)}
    assert verdicts["vocabulary"].details["outside"] == ["red", "bird"]
    assert set(verdicts["exclude"].details["offending"]) == {"red", "bird"}
    assert "ɝ" in verdicts["exclude"].details["offending"]["bird"]
    assert verdicts["include"].ok and set(verdicts["include"].details["words"]) == {"saw", "seven"}


def test_check_multopp_and_maxopp(lexicon: Lexicon) -> None:
    c = [
        {
            "type": "contrastive_multopp",
            "substitute": "t",
            "targets": ["k", "s"],
            "position": "initial",
        },
        {"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s", "position": "initial"},
    ]
    sol = solve(lexicon, parse_constraints(c))
    v = check_text("Tea, key and sea. A mat sat.", sol, lexicon)
    assert [x.ok for x in v] == [True, True, True]
    assert v[1].details["sets_found"] == [["tea", "key", "sea"]]
    assert v[2].details["pairs_found"] == [["mat", "sat"]]


# ----------------------------------------------------------------------------- budget, backend


def test_unsupported_backend() -> None:
    require_llguidance("llguidance")
    with pytest.raises(UnsupportedBackend) as exc:
        require_llguidance("lm-format-enforcer")
    assert "llguidance" in str(exc.value) and "lm-format-enforcer" in str(exc.value)


def test_budget_error_is_the_declared_capability() -> None:
    assert issubclass(BudgetTooSmall, base.BudgetTooSmall)
