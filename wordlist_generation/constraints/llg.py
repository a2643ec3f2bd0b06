"""The one llguidance wrapper: a `SequenceConstraint` over an `llguidance.LLMatcher`, and the
compilation of a Lark grammar into a factory of such sequences.

Masks are filled through `llguidance.numpy` (the matcher writes its bits straight into our int32
row): `llguidance.torch` would compile a kernel with `torch.compile` when imported.

Extending a sequence (a constraint that steers near the end of the token budget, say) is a
subclass: `fork` copies every attribute (give mutable ones fresh copies in an override),
`advance` checks the token and calls `_consume`, `fill_allowed` goes through `fill_bitmask`, so
narrowing `fill_bitmask` after `super().fill_bitmask(row)` narrows both, and
`set_remaining_tokens` is the `SequenceConstraint` hook for the budget.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from .base import SequenceConstraint
from .bitmask import copy_into, unpack_into, zeros
from .tokenizer import TokenizerTables

__all__ = [
    "LlguidanceGrammar",
    "LlguidanceSequence",
    "accepts_tokens",
    "compile_lark",
    "fill_row",
    "matcher_mask",
    "new_matcher",
]

Q = TypeVar("Q", bound="LlguidanceSequence")


def new_matcher(
    ll_tokenizer: Any, grammar: str, *, limits: Any = None, what: str = "grammar"
) -> Any:
    """An `LLMatcher` of the Lark `grammar`; ValueError naming `what` when it does not compile."""
    import llguidance

    kwargs: dict[str, Any] = {"log_level": 0}
    if limits is not None:
        kwargs["limits"] = limits
    m = llguidance.LLMatcher(
        ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), **kwargs
    )
    if m.is_error():
        raise ValueError(f"{what} did not compile: {m.get_error()}")
    return m


def fill_row(matcher: Any, row: torch.Tensor) -> None:
    """Write the next-token mask of `matcher` into the contiguous int32 CPU `row`, which must hold
    at least the words of the matcher's vocabulary."""
    import llguidance.numpy as ln

    ln.fill_next_token_bitmask(matcher, row.numpy().reshape(1, -1))


def matcher_mask(matcher: Any, width: int) -> torch.Tensor:
    """The next-token mask of `matcher` as a new row of `width` words."""
    row = zeros(width)
    fill_row(matcher, row)
    return row


def accepts_tokens(matcher: Any, ids: Sequence[int]) -> bool:
    """Would `matcher` (left untouched) take `ids` and then be able to end?"""
    m = matcher.deep_copy()
    return bool(m.consume_tokens(list(ids))) and bool(m.is_accepting())


class LlguidanceSequence(SequenceConstraint):
    """Decoding state over any llguidance grammar: one `LLMatcher`, deep-copied per fork."""

    __slots__ = ("_matcher", "_tables")

    def __init__(self, matcher: Any, tables: TokenizerTables) -> None:
        self._matcher = matcher
        self._tables = tables

    def fork(self: Q) -> Q:
        other = copy.copy(self)
        other._matcher = self._matcher.deep_copy()
        return other

    def advance(self, token_id: int) -> bool:
        if not self._tables.is_text_token(token_id):
            return False
        return self._consume(token_id)

    def _consume(self, token_id: int) -> bool:
        """Feed one (checked) token to the matcher."""
        return bool(self._matcher.consume_token(token_id))

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        t = self._tables
        copy_into(bitmask, matcher_mask(self._matcher, t.width) & t.valid_mask)
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        t = self._tables
        row = zeros(t.width)
        self.fill_bitmask(row)
        unpack_into(row, allowed, t.vocab_size)

    def can_end(self) -> bool:
        return bool(self._matcher.is_accepting())

    @property
    def error(self) -> str:
        return str(self._matcher.get_error())


class LlguidanceGrammar:
    """A compiled llguidance grammar: `start()` gives a fresh sequence (a copy of a clean matcher,
    microseconds, where building a matcher recompiles the grammar)."""

    def __init__(self, matcher: Any, tables: TokenizerTables, compile_seconds: float) -> None:
        self._clean = matcher
        self.tables = tables
        self.compile_seconds = compile_seconds

    def start(self) -> LlguidanceSequence:
        return LlguidanceSequence(self._clean.deep_copy(), self.tables)

    def accepts(self, text: str) -> bool:
        """Character-level acceptance: is `text` a complete string of the grammar?"""
        return accepts_tokens(self._clean, self.tables.ll.tokenize_str(text))


def compile_lark(tables: TokenizerTables, grammar: str, *, limits: Any = None) -> LlguidanceGrammar:
    """Compile any Lark grammar over the tokenizer's own vocabulary (ValueError if invalid)."""
    t0 = time.perf_counter()
    m = new_matcher(tables.ll, grammar, limits=limits)
    return LlguidanceGrammar(m, tables, time.perf_counter() - t0)
