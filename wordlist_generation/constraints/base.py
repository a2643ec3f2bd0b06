"""The small interface between decoding and any constraint.

The engine knows only these two classes. A constraint is compiled once (expensive, cached) into a
`CompiledConstraint`; every sequence that decodes under it (a request row, a beam, a batch row) gets
its own `SequenceConstraint`, forked from a parent in microseconds, so beams that reorder every
step never share mutable state.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

#: Set when the process exits: background warm-ups (`WordlistHandler`) stop at their next step,
#: so that none is inside native code (llguidance) while the interpreter finalizes, which can
#: crash the process on its way out.
WARM_STOP = threading.Event()


class SequenceConstraint(ABC):
    """Mutable decoding state of one sequence."""

    @abstractmethod
    def fork(self) -> SequenceConstraint:
        """An independent copy (cheap: called per beam and per step where beams split)."""

    @abstractmethod
    def advance(self, token_id: int) -> bool:
        """Consume one generated token. False when the token was not allowed (state unusable)."""

    @abstractmethod
    def fill_allowed(self, allowed: torch.Tensor) -> None:
        """Set `allowed[t] = True` for every token that may come next.

        `allowed` is a bool vector as long as the model's logits, initially all False. End-of-sequence
        tokens are handled by the caller through `can_end()`, so implementations may leave them out.
        """

    @abstractmethod
    def can_end(self) -> bool:
        """True when the text so far is a complete answer (we are at a word boundary)."""

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        """Optional fast path: fill the int32 row `bitmask` (initially zero) with the allowed
        tokens, bit `t % 32` of word `t // 32`, and return True.

        Backends that compute masks natively as bits (llguidance) skip a bool round trip this way.
        The default returns False and the caller uses `fill_allowed`. EOS is handled by the caller
        as in `fill_allowed`.
        """
        return False

    def set_remaining_tokens(self, remaining: int) -> None:
        """Declared capability: told before each mask how many tokens the budget has left.

        Constraints that must fit required words before the end of `max_tokens` steer with it
        (phonological mode); the default ignores it.
        """
        return None

    def token_bias(self) -> dict[int, float]:
        """Declared capability: additive boosts to a few next-token scores, read right after the
        mask (a masked token stays masked).

        Lets the model choose where a word goes instead of forcing it there (phonological mode
        raises a planned word's first token inside sentences); the default is none.
        """
        return {}


@dataclass
class CheckReport:
    """Result of an independent re-check of a final text."""

    ok: bool
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportedGrammar:
    """A grammar another engine can run instead of our own masks (e.g. llguidance in vLLM).

    `syntax` names the grammar language ("lark" for llguidance's Lark dialect); `text` is the
    grammar; `tokenizer_note` says what the grammar assumes about tokenization; `not_carried`
    names what this server's decoding enforces beyond it (empty: the grammar is the whole
    constraint), for an engine that runs the grammar alone to report.
    """

    syntax: str
    text: str
    tokenizer_note: str = ""
    not_carried: str = ""


class CompiledConstraint(ABC):
    """A constraint compiled for one tokenizer; shared, immutable, cached.

    Optional capabilities are declared here, with neutral defaults, so that call sites never
    probe with `getattr`/`hasattr`:

    - `has_soft_constraints` + `soft_score`: candidates can be ranked (drafts);
    - `check_budget`: refuse a `max_tokens` that can never satisfy the constraint;
    - `SequenceConstraint.set_remaining_tokens`: steer toward required words near the end;
    - `SequenceConstraint.token_bias`: boost words the model may place where they fit;
    - `exported_grammar`: a grammar another engine can run;
    - `progress`: what to tell a client before generation starts (streaming events).
    """

    #: Seconds spent compiling (0.0 when it came from the cache is reported by the cache, not here).
    compile_seconds: float = 0.0
    #: True when `soft_score` ranks texts (candidates are then generated as drafts).
    has_soft_constraints: bool = False

    @abstractmethod
    def start(self) -> SequenceConstraint:
        """A fresh state for a new sequence (a copy of a clean, pre-built state)."""

    @abstractmethod
    def releasable(self, text: str) -> int:
        """How many leading characters of a still-growing `text` may be streamed now.

        Text after the last word boundary is held back: it may still become a word outside the
        list, or be trimmed by `finalize` if generation is cut.
        """

    @abstractmethod
    def finalize(self, text: str, complete: bool) -> str:
        """The text to return. When `complete` is False (cut by max_tokens or cancelled), a
        trailing partial word that is not itself allowed is removed."""

    @abstractmethod
    def check(self, text: str) -> CheckReport:
        """Independent re-check of a final text (does not use the token masks)."""

    def prompt_hint(self) -> str | None:
        """An instruction telling the model about the restriction, or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Extension fields reported in the response (language, n_words, sha256, ...)."""
        return {}

    def soft_score(self, text: str) -> float:
        """Higher is better; only meaningful when `has_soft_constraints`."""
        return 0.0

    def check_budget(self, max_tokens: int) -> None:
        """Raise `BudgetTooSmall` when `max_tokens` can never satisfy the constraint."""
        return None

    def exported_grammar(self) -> ExportedGrammar | None:
        """The grammar another engine can run, or None when only our own masks express it."""
        return None


class BudgetTooSmall(Exception):
    """`max_tokens` cannot fit what the constraint requires (raised by `check_budget`)."""

    def __init__(self, message: str, *, needed: int) -> None:
        super().__init__(message)
        self.needed = needed
