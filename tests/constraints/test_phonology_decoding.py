"""Phonological constraints while decoding, without a model: grammar replay through the token
masks (the former dead ends included), forks, the bitmask path, text handling, word tracking,
placement and budget steering, and declared capabilities."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from phonology_cases import (
    DZ_FINAL_SHORT,
    NO_R_NO_L_TWO_S,
    QUALITY_COMBINATIONS,
    compiled,
    drive,
    replay,
)

from wordlist_generation.constraints import bitmask
from wordlist_generation.constraints.phonology import (
    BudgetTooSmall,
    Lexicon,
    WordTracker,
    answer_words,
)
from wordlist_generation.constraints.phonology.grammar import END_REGEX, LEAD_REGEX, SEP_REGEX
from wordlist_generation.constraints.phonology.tracking import goes_on
from wordlist_generation.constraints.processor import ConstraintLogitsProcessor
from wordlist_generation.constraints.separators import separator_regexes
from wordlist_generation.constraints.tokenizer import TokenizerTables


def test_replay_include_grammar(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, NO_R_NO_L_TWO_S)
    assert replay(pc, smollm_tokenizer, "So I see the sun.") == (True, True)
    assert replay(pc, smollm_tokenizer, 'Sun and sea, in the "sky" - so nice!\nYes.') == (
        True,
        True,
    )
    # compliant words, but only one /s/-initial word: tokens allowed, end blocked
    assert replay(pc, smollm_tokenizer, "The cat sat on a mat") == (True, False)
    # the same /s/ word twice does not count twice
    assert replay(pc, smollm_tokenizer, "so so so") == (True, False)
    # /ɹ/ and /l/ words are rejected somewhere
    assert replay(pc, smollm_tokenizer, "The red sun")[0] is False
    assert replay(pc, smollm_tokenizer, "So I see the light")[0] is False
    # only bounded separators
    assert replay(pc, smollm_tokenizer, "So  I see the sun")[0] is False


def test_replay_minimal_pair_grammar(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    assert replay(pc, smollm_tokenizer, "The cat has had a nap.") == (True, True)
    assert replay(pc, smollm_tokenizer, "She said it, and he says it") == (
        True,
        True,
    )  # another kept pair
    assert replay(pc, smollm_tokenizer, "It hasn't had it, but it has.") == (
        True,
        True,
    )  # prefix of a class word
    assert replay(pc, smollm_tokenizer, "The cat had a nap.") == (True, False)
    assert replay(pc, smollm_tokenizer, "The elephant has had a nap.")[0] is False  # 3 syllables


def s_initial(min_count: int) -> list[dict]:
    return [
        {"type": "exclude", "phonemes": ["r", "l"]},
        {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": min_count},
    ]


#: The answer that stopped llguidance ("parser error: Too many items (limit 50000; mask)") 16
#: tokens in when each required /s/ word nested one more parametric rule; with min_count 3 it
#: was the commonest request of a clinician. Repeated, it is ~270 tokens.
FORMER_DEAD_END = (
    "So some saw. She had a happy day. She said she had seen some sun, so she sat on a sofa "
    "and sang a song, she was so happy. So she sat, and she saw some seeds."
)


@pytest.mark.parametrize("min_count", [1, 3])
def test_former_dead_end_replays_to_the_end(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables, min_count: int
) -> None:
    pc = compiled(lexicon, tables, s_initial(min_count))
    assert replay(pc, smollm_tokenizer, " ".join([FORMER_DEAD_END] * 6)) == (True, True)


def test_replay_without_required_words(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, [{"type": "exclude", "phonemes": ["z"]}])
    assert replay(pc, smollm_tokenizer, "The cat sat on a mat.") == (True, True)
    assert replay(pc, smollm_tokenizer, "The cat is here")[0] is False
    assert pc.min_tokens_to_satisfy() == 0


def test_separators_are_the_shared_rule(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    assert (SEP_REGEX, LEAD_REGEX, END_REGEX) == (
        separator_regexes().gap_lark,
        separator_regexes().lead_lark,
        separator_regexes().tail_lark,
    )
    pc = compiled(lexicon, tables, NO_R_NO_L_TWO_S)
    assert replay(pc, smollm_tokenizer, "“So,” I see the sun… Yes!") == (True, True)
    assert replay(pc, smollm_tokenizer, "(So) I see the sun - yes.\n\nSo.") == (True, True)
    assert replay(pc, smollm_tokenizer, "So I see the sun!!!!!")[0] is False  # at most 4 closing
    assert replay(pc, smollm_tokenizer, "So I see the sun\n\n\nYes.")[0] is False


def test_bitmask_and_bool_masks_agree(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    state = pc.start()
    for tok in smollm_tokenizer.encode("The cat has had", add_special_tokens=False):
        row = bitmask.zeros(tables.width)
        assert state.fill_bitmask(row)
        allowed = torch.zeros(tables.vocab_size, dtype=torch.bool)
        state.fill_allowed(allowed)
        assert torch.equal(bitmask.unpack(row, tables.vocab_size), allowed)
        assert not allowed[list(tables.special)].any()
        assert state.advance(tok)
    assert state.can_end()


def test_sequence_fork_is_independent(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    s = pc.start()
    for t in smollm_tokenizer.encode("It has", add_special_tokens=False):
        assert s.advance(t)
    f = s.fork()
    for t in smollm_tokenizer.encode(" had", add_special_tokens=False):
        assert f.advance(t)
    assert f.can_end() and not s.can_end()


def test_releasable_and_finalize(lexicon: Lexicon, tables: TokenizerTables) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    assert pc.releasable("The cat hasn") == len("The cat ")
    assert pc.releasable("The cat has. ") == len("The cat has. ")
    assert pc.finalize("The cat hasn", complete=False) == "The cat "
    assert pc.finalize("The cat has", complete=False) == "The cat has"
    assert pc.finalize("The cat hasn", complete=True) == "The cat hasn"
    assert answer_words('Don\'t say "Bees"!') == ["don't", "say", "bees"]


def test_describe_and_prompt_hint(lexicon: Lexicon, tables: TokenizerTables) -> None:
    pc = compiled(lexicon, tables, NO_R_NO_L_TWO_S + DZ_FINAL_SHORT)
    d = pc.describe()
    assert d["mode"] == "phonological"
    assert d["vocabulary"]["allowed"] == pc.solution.n_allowed
    assert [r["type"] for r in d["required"]] == ["include", "contrastive_minpair"]
    # " said" and " says": a minimal pair whose two words also start with /s/
    assert d["grammar"]["min_tokens_to_satisfy"] == 2 and d["compile_ms"] > 0
    hint = pc.prompt_hint() or ""
    chosen = pc.solution.required_words()
    assert d["required_words"] == d["target_words"]["chosen"] == chosen
    assert len(chosen) == 4 and all(f'"{w}"' in hint for w in chosen)
    assert "/ɹ/" in hint


def test_budget_too_small(lexicon: Lexicon, tables: TokenizerTables) -> None:
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT)
    need = pc.min_tokens_to_satisfy()
    assert need == 2  # " had" and " has" are one token each
    pc.check_budget(need)
    with pytest.raises(BudgetTooSmall) as exc:
        pc.check_budget(need - 1)
    assert exc.value.needed == need


def test_steering_fits_required_words_in_a_tight_budget(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """A stubborn 'model' that always says 'the cat ...' still ends compliant within budget."""
    pc = compiled(lexicon, tables, NO_R_NO_L_TWO_S + DZ_FINAL_SHORT)
    preferred = smollm_tokenizer.encode(
        "The cat sat on a mat and a cat sat on a mat and", add_special_tokens=False
    )
    budget = 12
    state = pc.start()
    out: list[int] = []
    for step in range(budget):
        state.set_remaining_tokens(budget - step)
        allowed = torch.zeros(len(smollm_tokenizer), dtype=torch.bool)
        state.fill_allowed(allowed)
        want = preferred[step % len(preferred)]
        tok = want if allowed[want] else int(torch.nonzero(allowed)[0])
        assert state.advance(tok)
        out.append(tok)
        if state.can_end():
            break
    text = smollm_tokenizer.decode(out)
    assert state.can_end(), text
    assert pc.check(text).ok, text


def test_last_token_of_the_budget_ends_a_compliant_answer(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """With one token left and the requirements met, no new word may start: a word cut by
    max_tokens ("so" -> "sof") would be trimmed and take a required word with it."""
    pc = compiled(lexicon, tables, NO_R_NO_L_TWO_S)
    state = pc.start()
    for tok in smollm_tokenizer.encode("We see some sun so", add_special_tokens=False):
        assert state.advance(tok)
    assert state.can_end()
    state.set_remaining_tokens(2)
    allowed = torch.zeros(len(smollm_tokenizer), dtype=torch.bool)
    state.fill_allowed(allowed)
    assert allowed.any()  # with room left, the answer may go on
    state.set_remaining_tokens(1)
    allowed = torch.zeros(len(smollm_tokenizer), dtype=torch.bool)
    state.fill_allowed(allowed)
    assert not allowed.any()  # only EOS, which the processor adds when can_end()


def test_word_tracker_counts_words_inside_sentences() -> None:
    t = WordTracker()
    for chunk in (b"So I s", b"ee the sun. Some", b"one's dog, you", b" see"):
        t.feed(chunk)
    assert t.seen == {"so", "i", "see", "the", "sun", "someone's", "dog", "you"}
    # "sun" ends its sentence, "so" and "someone's" start one
    assert t.inside == {"i", "see", "the", "dog", "you"}
    assert t.written() == t.seen | {"see"} and t.glued and t.mid_sentence()
    copy = t.copy()
    t.feed(b"!\n")
    assert t.sentence_words == 0 and not t.mid_sentence() and copy.mid_sentence()
    assert copy.word == "see" and t.word == "" and t.seen == copy.written()
    for text, after in ((b"I saw the", True), (b"I saw my ", True), (b"I saw them", False)):
        t = WordTracker()
        t.feed(text)
        assert t.after_determiner() is after, text
    goes = {b" and": True, b", so": True, b" ": True, b".": False, b" .": False, b"\n": False}
    goes |= {b"s": False, b"'s": False}  # would lengthen the word
    assert {b: goes_on(b) for b in goes} == goes


def test_a_placed_word_keeps_its_sentence_open(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """The state boosts the planned word inside a sentence; once the word is written, neither
    a full stop nor the end may follow it before the next word."""
    pc = compiled(lexicon, tables, s_initial(1))
    assert pc.requirements.chosen == ("so",)
    state = pc.start()
    for tok in smollm_tokenizer.encode("We had a big hut and", add_special_tokens=False):
        assert state.advance(tok)
    state.set_remaining_tokens(40)
    row = bitmask.zeros(tables.width)
    state.fill_bitmask(row)
    so = smollm_tokenizer.encode(" so", add_special_tokens=False)
    bias = state.token_bias()
    assert list(bias) == [so[0]] and bias[so[0]] >= 2.0
    assert state.advance(so[0]) and state.words.written() >= {"so"}
    state.set_remaining_tokens(39)
    allowed = torch.zeros(tables.vocab_size, dtype=torch.bool)
    state.fill_allowed(allowed)
    stop = smollm_tokenizer.encode(".", add_special_tokens=False)[0]
    on = smollm_tokenizer.encode(" it", add_special_tokens=False)[0]
    assert not state.can_end() and not allowed[stop] and allowed[on]
    assert state.advance(on)
    assert state.can_end() and state.words.inside >= {"so"}


def test_the_logits_processor_adds_the_boosts_after_the_mask(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """What beam search and `generate` use: a masked token stays masked, a boosted one rises."""
    pc = compiled(lexicon, tables, s_initial(1))
    prompt = smollm_tokenizer.encode("We had a big hut and", add_special_tokens=False)
    proc = ConstraintLogitsProcessor(
        [pc.start()], prompt_len=0, num_beams=1, eos_token_ids=[0], budgets=[40 + len(prompt)]
    )
    scores = proc(torch.tensor([prompt]), torch.zeros((1, tables.vocab_size)))
    so = smollm_tokenizer.encode(" so", add_special_tokens=False)[0]
    red = smollm_tokenizer.encode(" red", add_special_tokens=False)[0]
    assert int(torch.argmax(scores[0])) == so and scores[0, so] >= 2.0
    assert scores[0, red] == -torch.inf


SCRIPT = "The cat sat on a mat and the dog went to the big hut. It was a fine day. "


def test_planned_words_land_inside_sentences(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """A 'model' that would never write them still gets the required words, each with a word
    before and after it in one sentence, well before the end of the budget: the planned ones,
    except where the model's own words already serve ("sat" starts with /s/)."""
    pc = compiled(lexicon, tables, s_initial(3) + DZ_FINAL_SHORT)
    assert pc.requirements.chosen == ("so", "some", "see", "had", "has")
    text, state = drive(pc, smollm_tokenizer, SCRIPT * 3, 128)
    assert pc.check(text).ok, text
    assert pc.requirements.satisfied(state.words.inside), text
    assert state.words.inside >= {"so", "some", "had", "has", "sat"}, text
    assert len(smollm_tokenizer.encode(text, add_special_tokens=False)) < 100, text


def test_every_quality_combination_ends_compliant(
    lexicon: Lexicon, smollm_tokenizer: Any, tables: TokenizerTables
) -> None:
    """No dead end and a compliant answer for each combination the benchmark measures, driven
    by a stubborn 'model' (the benchmark runs the embedded one): cut by the budget (64) or
    ending on its own (128)."""
    for name, raw in QUALITY_COMBINATIONS.items():
        pc = compiled(lexicon, tables, raw)
        for budget in (64, 128):
            text, state = drive(pc, smollm_tokenizer, SCRIPT * 3, budget)
            assert state.can_end() and pc.check(text).ok, (name, budget, text)


def test_declared_capabilities(lexicon: Lexicon, tables: TokenizerTables) -> None:
    soft = [{"type": "bound_boost", "norm": "syllables", "max_value": 1}]
    pc = compiled(lexicon, tables, DZ_FINAL_SHORT + soft)
    assert pc.has_soft_constraints
    assert pc.soft_score("The cat has had a nap.") == 1.0
    assert pc.check("The cat has had a nap.").details["soft_score"] == 1.0
    exported = pc.exported_grammar()
    assert exported.syntax == "lark" and exported.text == pc.grammar
    assert "initial_lexer_fuel" in exported.tokenizer_note
    d = pc.describe()
    assert d["solve_seconds"] == round(pc.solution.solve_seconds, 4)
    hard = compiled(lexicon, tables, DZ_FINAL_SHORT)
    assert not hard.has_soft_constraints and hard.soft_score("The cat has had a nap.") == 0.0
