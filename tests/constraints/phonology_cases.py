"""Shared by the phonological-mode tests: request cases, the lexicon, compile and replay helpers."""

from __future__ import annotations

from typing import Any

import torch

from wordlist_generation.constraints.phonology import (
    Lexicon,
    PhonologicalConstraint,
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
        allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
        state.fill_allowed(allowed)
        if not allowed[tok] or not state.advance(tok):
            return False, False
    return True, state.can_end()
