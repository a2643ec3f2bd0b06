"""Shared by the phonological-mode tests: request cases, the lexicon, compile and replay helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

from wordlist_generation.constraints import bitmask
from wordlist_generation.constraints.phonology import (
    Lexicon,
    PhonologicalConstraint,
    PhonologicalSequence,
    parse_constraints,
    solve,
)
from wordlist_generation.constraints.tokenizer import TokenizerTables
from wordlist_generation.engine.loader import default_cache_dir

#: No /ɹ/ (nor /ɝ ɚ/) and no /l/; two distinct words starting with /s/.
NO_R_NO_L_TWO_S = [
    {"type": "exclude", "phonemes": ["r", "l"]},
    {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": 2},
]
#: A word-final d/z minimal pair; every word of at most two syllables.
DZ_FINAL_SHORT = [
    {"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"},
    {"type": "bound", "norm": "syllables", "max_value": 2},
]


def load_lexicon() -> Lexicon:
    """The cached lexicon, warmed (what the server's background load does)."""
    lex = Lexicon.load(default_cache_dir() / "lexicon")
    lex.warm()
    return lex


def compiled(
    lexicon: Lexicon, tables: TokenizerTables, raw: list[dict], **kw: Any
) -> PhonologicalConstraint:
    return PhonologicalConstraint(solve(lexicon, parse_constraints(raw), **kw), lexicon, tables)


def replay(pc: PhonologicalConstraint, tokenizer: Any, text: str) -> tuple[bool, bool]:
    """Feed the tokens of `text` through fresh sequence state, checking each against the mask.

    Returns (every token was allowed, the state may end afterwards).
    """
    state = pc.start()
    for tok in tokenizer.encode(text, add_special_tokens=False):
        row = bitmask.zeros(pc.tables.width)
        state.fill_bitmask(row)
        if not int(row[tok // 32]) >> (tok % 32) & 1 or not state.advance(tok):
            return False, False
    return True, state.can_end()


def drive(
    pc: PhonologicalConstraint, tokenizer: Any, script: str, budget: int
) -> tuple[str, PhonologicalSequence]:
    """Decode `budget` tokens with a stubborn stand-in for a model that keeps writing `script`.

    The model's own choice (the next token of the script, cycling, scored 4.5) competes with the
    state's score boosts (`token_bias`) inside the mask; when the mask refuses it, the allowed
    token with the highest boost wins (the lowest id on ties), and end-of-sequence comes only
    when the state allows it and its 'model' would end (after the last token of the script).
    Raises AssertionError on a dead end. Returns the text and the final state.
    """
    preferred = tokenizer.encode(script, add_special_tokens=False)
    state = pc.start()
    out: list[int] = []
    for step in range(budget):
        state.set_remaining_tokens(budget - step)
        row = bitmask.zeros(pc.tables.width)
        state.fill_bitmask(row)
        allowed = np.unpackbits(row.numpy().view(np.uint8), bitorder="little").astype(bool)
        can_end = state.can_end()
        assert allowed.any() or can_end, f"dead end after {tokenizer.decode(out)!r}"
        if can_end and (not allowed.any() or step >= len(preferred)):
            break
        scores = np.where(allowed, 0.0, -np.inf)
        want = preferred[step % len(preferred)]
        if allowed[want]:
            scores[want] = 4.5
        for t, boost in state.token_bias().items():
            scores[t] += boost
        tok = int(np.argmax(scores))
        assert state.advance(tok), tokenizer.decode([*out, tok])
        out.append(tok)
    return tokenizer.decode(out), state


def _no(*phonemes: str) -> dict:
    return {"type": "exclude", "phonemes": list(phonemes)}


def _s_initial(min_count: int) -> dict:
    return {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": min_count}


_MINPAIR = {"type": "contrastive_minpair", "phoneme1": "t", "phoneme2": "k", "position": "initial"}
_MAXOPP = {"type": "contrastive_maxopp", "phoneme1": "m", "phoneme2": "s", "position": "initial"}
_MULTOPP = {
    "type": "contrastive_multopp",
    "substitute": "t",
    "targets": ["k", "s", "f"],
    "n_targets": 3,
    "position": "initial",
}

#: The combinations a clinician asks for, measured on the embedded model by
#: `scripts/bench_phonology_quality.py` (no `finish_reason: "error"`, target words inside
#: sentences) and compiled and replayed here. Each contrastive type alone and with an exclusion.
QUALITY_COMBINATIONS: dict[str, list[dict]] = {
    "no-r-l+s-initial-x1": [_no("r", "l"), _s_initial(1)],
    "no-r-l+s-initial-x3": [_no("r", "l"), _s_initial(3)],
    "no-r-l+s-initial-x4": [_no("r", "l"), _s_initial(4)],
    "minpair-t-k": [_MINPAIR],
    "maxopp-m-s": [_MAXOPP],
    "multopp-t-k-s-f": [_MULTOPP],
    "minpair-t-k+no-r": [_no("r"), _MINPAIR],
    "maxopp-m-s+no-l": [_no("l"), _MAXOPP],
    "multopp-t-k-s-f+no-r": [_no("r"), _MULTOPP],
    "one-syllable+k-final-x4": [
        {"type": "bound", "norm": "syllables", "max_value": 1},
        {"type": "include", "phonemes": ["k"], "position": "final", "min_count": 4},
    ],
    "minpair-d-z-final+two-syllables": DZ_FINAL_SHORT,
    "no-s-z+sh-any-x2": [
        _no("s", "z"),
        {"type": "include", "phonemes": ["ʃ"], "position": "any", "min_count": 2},
    ],
}
