"""The engine's view of a solved phonological request: a vocabulary grammar, the required words
and the steering that places them.

Sequence states are `llg.LlguidanceSequence`s (one llguidance matcher each, for the allowed
vocabulary) plus a `tracking.WordTracker` (which words are written, and where): the answer may end
only when the required words are all there (`requirements`). When told the remaining token
budget, a state places the planned words inside sentences early in the answer and, near the end
of the budget, steers toward whatever words are still missing (`steering`). The constraint
declares the optional capabilities of `CompiledConstraint`: soft scores (drafts), a budget check,
a prompt hint naming the planned words and an exported Lark grammar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..base import CheckReport, CompiledConstraint, ExportedGrammar
from ..bitmask import ids_to_bool, pack
from ..llg import LlguidanceSequence, new_matcher
from ..tokenizer import TokenizerTables
from .check import Verdict, answer_words, check_text, present_words, soft_total
from .errors import BudgetTooSmall
from .grammar import lark_grammar
from .lexicon import Lexicon
from .phonemes import expand_exclusion
from .requirements import Requirements
from .solve import Solution
from .steering import EARLY_BOOST, RequiredWordPlanner
from .tracking import WordTracker, goes_on

#: llguidance limits sized for a whole-lexicon grammar: the default lexer fuel (1e6) is exhausted
#: by tens of thousands of word alternatives in one lexeme, and the matcher then enters an error
#: state that only allows EOS. These are what a 45,000-word lexicon needs, with headroom.
PARSER_LIMITS = {
    "initial_lexer_fuel": 50_000_000,
    "step_lexer_fuel": 10_000_000,
    "max_lexer_states": 2_000_000,
    "max_grammar_size": 5_000_000,
}

#: What the exported Lark grammar assumes (see `exported_grammar`).
TOKENIZER_NOTE = (
    "Character-level grammar over UTF-8 text: it works with any byte-level llguidance tokenizer "
    "(this server compiles it over the tokenizer's ordinary vocabulary). Its whole-lexicon "
    "lexemes need LLParserLimits("
    + ", ".join(f"{k}={v}" for k, v in PARSER_LIMITS.items())
    + "). It allows the vocabulary only: the required words are tracked by this server's "
    "decoding state (the answer may end only once they are written), and so is the steering "
    "that places them; an engine that runs the grammar alone may end without them."
)


#: What the exported grammar leaves to this server's decoding state (see `exported_grammar`).
NOT_CARRIED = (
    "the steering of required words: placing them before max_tokens runs out, and not ending "
    "the answer before they are written"
)


def sentence_goes_on(tables: TokenizerTables) -> torch.Tensor:
    """The tokens that keep a sentence going right after a word (`tracking.goes_on`), packed."""
    return pack(np.fromiter(map(goes_on, tables.token_bytes), dtype=bool), tables.width)


def parser_limits() -> Any:
    """`PARSER_LIMITS` as llguidance's own object."""
    import llguidance

    return llguidance.LLParserLimits(**PARSER_LIMITS)


class PhonologicalSequence(LlguidanceSequence):
    """Decoding state: an `LLMatcher` for the vocabulary, a `WordTracker` for the required words.

    The answer may end only when the grammar is at a word boundary and the written words meet
    every requirement; while the budget can still place them, by words inside sentences. Told
    the remaining budget (`set_remaining_tokens`, before each mask), the
    state steers, always within the grammar:

    1. near the end of the budget, the mask narrows to the missing required words that still fit
       (compliance first);
    2. right after a placed word, the mask narrows to tokens that go on with the sentence (no
       `.`, no end), so the word has a word after it;
    3. inside a sentence, the planned words still to place get a score boost (`token_bias`), which
       grows once a word is due (`RequiredWordPlanner.boost`): the model puts each where it fits
       best; a word still not placed at its deadline is forced. Right after a determiner ("the",
       "my") no word is forced nor boosted beyond the early boost.
    """

    def __init__(self, owner: PhonologicalConstraint, matcher: Any) -> None:
        super().__init__(matcher, owner.tables)
        self._owner = owner
        self._words = WordTracker()
        self._n = 0
        self._remaining: int | None = None
        #: Token sequences of the word(s) being steered (empty: none), and the tokens written.
        self._steer: tuple[tuple[int, ...], ...] = ()
        self._path: tuple[int, ...] = ()
        self._placing = False
        self._bias: dict[int, float] = {}
        #: A placed word was just written: its sentence must go on until the next word starts.
        self._hold_from: int | None = None
        #: Tokens written when the last planned word was placed.
        self._placed_at = 0

    def fork(self) -> PhonologicalSequence:
        other = super().fork()
        other._words = self._words.copy()
        return other

    def _consume(self, token_id: int) -> bool:
        ok = super()._consume(token_id)
        self._n += 1
        self._words.feed(self._owner.tables.token_bytes[token_id])
        if self._remaining is not None:
            self._remaining -= 1
        if self._steer:
            path = (*self._path, token_id)
            if path in self._steer:
                if self._placing:
                    self._hold_from, self._placed_at = self._words.started, self._n
                self._steer, self._path = (), ()
            elif any(s[: len(path)] == path for s in self._steer):
                self._path = path
            else:
                self._steer, self._path = (), ()
        if self._hold_from is not None and self._words.started > self._hold_from:
            self._hold_from = None
        return ok

    def set_remaining_tokens(self, remaining: int) -> None:
        """Tokens that may still be generated, counting the next one."""
        self._remaining = remaining

    @property
    def words(self) -> WordTracker:
        """The words written so far (read-only use)."""
        return self._words

    def can_end(self) -> bool:
        if not super().can_end() or self._holding():
            return False
        requirements, words = self._owner.requirements, self._words
        if not requirements.satisfied(words.written()):
            return False
        if self._remaining is None or requirements.satisfied(words.inside):
            return True
        # Met, but not by words inside sentences: go on while the budget can still place them.
        pending = requirements.pending(words.inside)
        return self._remaining <= self._owner.planner.placement_cost(pending) + 2

    def _holding(self) -> bool:
        return self._hold_from is not None and (self._remaining is None or self._remaining > 2)

    def token_bias(self) -> dict[int, float]:
        return self._bias

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        self._bias = {}
        if self._remaining == 1 and self.can_end():
            # The last token of the budget: a complete, compliant answer ends here (the caller
            # allows EOS) rather than starting a word that max_tokens would cut and trim away,
            # possibly taking a required word with it ("so" -> "sof").
            return True
        super().fill_bitmask(bitmask)
        narrow = self._narrowing()
        if narrow is not None:
            narrowed = bitmask & narrow[: bitmask.shape[0]]
            if narrowed.any():
                bitmask.copy_(narrowed)
        return True

    def _narrowing(self) -> torch.Tensor | None:
        """The row the grammar mask is intersected with, or None (see the class docstring)."""
        owner = self._owner
        remaining = self._remaining
        if remaining is None or not owner.requirements:
            return None
        if self._path:  # finish the word being steered
            return self._steer_row()
        if remaining <= owner.steer_horizon:
            needed, words = owner.planner.cheapest(self._words.written())
            if needed and remaining <= needed + owner.steer_slack:
                self._steer = tuple(owner.planner.sequences(words, glued=self._words.glued))
                self._placing = False
                return self._steer_row()
        if self._holding():
            return owner.goes_on
        return self._placement(remaining)

    def _placement(self, remaining: int) -> torch.Tensor | None:
        """Boost (or, once overdue, force) the planned words still to place inside sentences."""
        owner, words = self._owner, self._words
        if not words.mid_sentence():
            return None
        planner = owner.planner
        pending = owner.requirements.pending(words.inside)
        placed = max(0, len(owner.requirements.chosen) - len(pending))
        glued = words.last != ord(" ")
        steer: list[tuple[int, ...]] = []
        for k, word in enumerate(pending):
            if remaining < planner.cost(word) + 2:
                continue
            seqs = planner.placement(word, glued=glued)
            boost = planner.boost(k, placed, self._n, self._n + remaining, self._placed_at)
            if words.after_determiner():  # "the so", "my told": wait for a better spot
                boost = min(boost, EARLY_BOOST)
            if boost == math.inf:
                self._steer, self._placing, self._bias = seqs, True, {}
                return self._steer_row()
            steer.extend(seqs)
            for s in seqs:
                self._bias[s[0]] = max(self._bias.get(s[0], 0.0), boost)
        self._steer, self._placing = tuple(steer), True
        return None

    def _steer_row(self) -> torch.Tensor | None:
        k = len(self._path)
        nxt = {s[k] for s in self._steer if len(s) > k and s[:k] == self._path}
        if not nxt:
            self._steer, self._path = (), ()
            return None
        t = self._owner.tables
        return pack(ids_to_bool([i for i in nxt if i < t.vocab_size], t.width * 32), t.width)


class PhonologicalConstraint(CompiledConstraint):
    """A solved phonological request compiled for one tokenizer (immutable, cacheable)."""

    def __init__(
        self,
        solution: Solution,
        lexicon: Lexicon,
        tables: TokenizerTables,
        *,
        steer_slack: int = 1,
    ) -> None:
        t0 = time.perf_counter()
        self.solution = solution
        self.lexicon = lexicon
        self.tables = tables
        self.grammar = lark_grammar(solution.allowed_words)
        self.steer_slack = steer_slack
        self._matcher = new_matcher(
            tables.ll, self.grammar, limits=parser_limits(), what="phonological grammar"
        )
        self._allowed = frozenset(solution.allowed_words)
        self.requirements = Requirements(solution)
        self.planner = RequiredWordPlanner(self.requirements, tables.tokenizer)
        #: Steering toward the missing words can only start once the remaining budget is at most
        #: this.
        self.steer_horizon = self.planner.min_tokens + steer_slack if self.requirements else -1
        #: Tokens that go on with a sentence after a word (`sentence_goes_on`).
        self.goes_on = sentence_goes_on(tables)
        self.has_soft_constraints = bool(solution.soft)
        self.compile_seconds = time.perf_counter() - t0

    def min_tokens_to_satisfy(self) -> int:
        """Fewest tokens any compliant answer needs (its required words; EOS not counted).

        A `max_tokens` below this can never produce a compliant answer: reject it up front.
        """
        return self.planner.min_tokens

    def check_budget(self, max_tokens: int) -> None:
        """Raise `BudgetTooSmall` when `max_tokens` cannot fit the required words."""
        if max_tokens < self.planner.min_tokens:
            raise BudgetTooSmall(max_tokens, self.planner.min_tokens, self.planner.min_words)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tables.ll.decode_str(list(tokens))

    def start(self) -> PhonologicalSequence:
        return PhonologicalSequence(self, self._matcher.deep_copy())

    def releasable(self, text: str) -> int:
        end = len(text)
        while end > 0 and (text[end - 1].isalpha() or text[end - 1] == "'"):
            end -= 1
        return end

    def finalize(self, text: str, complete: bool) -> str:
        if complete:
            return text
        cut = self.releasable(text)
        tail = text[cut:]
        if tail and tail.lower() not in self._allowed:
            return text[:cut]
        return text

    def verdicts(self, text: str) -> list[Verdict]:
        return check_text(text, self.solution, self.lexicon)

    def check(self, text: str) -> CheckReport:
        verdicts = self.verdicts(text)
        hard_failures = [v for v in verdicts if not v.ok and not v.soft]
        seen = set(answer_words(text))
        present: dict[str, bool] = {}
        for slot in self.solution.slots:
            present |= present_words(slot, seen)
        return CheckReport(
            ok=not hard_failures,
            violations=[
                f"constraint {v.constraint_index} ({v.type}): {v.message}"
                if v.constraint_index is not None
                else v.message
                for v in hard_failures
            ],
            details={
                "verdicts": [v.to_json() for v in verdicts],
                "required_words": present,
                "soft_score": round(soft_total(verdicts), 4),
            },
        )

    def soft_score(self, text: str) -> float:
        """Weighted fraction of words within the soft ranges (0 when there are none)."""
        if not self.has_soft_constraints:
            return 0.0
        return soft_total(self.verdicts(text))

    def exported_grammar(self) -> ExportedGrammar:
        return ExportedGrammar(
            "lark", self.grammar, tokenizer_note=TOKENIZER_NOTE, not_carried=NOT_CARRIED
        )

    def prompt_hint(self) -> str | None:
        """Names the planned words, so that the model uses them in its own sentences."""
        parts = ["Write in plain, simple English words."]
        chosen = self.requirements.chosen
        if chosen:
            listed = ", ".join(f'"{w}"' for w in chosen)
            parts.append(f"Use these words in your sentences: {listed}.")
        avoided = sorted(
            {
                p
                for c in self.solution.constraints
                if c.type == "exclude"
                for p in expand_exclusion(c.phonemes)
            }
        )
        if avoided:
            parts.append(f"Avoid words with the sounds /{'/, /'.join(avoided)}/.")
        return " ".join(parts)

    def describe(self) -> dict[str, Any]:
        out = {"mode": "phonological", "lexicon": self.lexicon.describe()}
        out |= self.solution.to_json()
        out["required_words"] = list(self.requirements.chosen)
        out["target_words"] = self.requirements.describe()
        out["grammar"] = {
            "chars": len(self.grammar),
            "n_words": self.solution.n_allowed,
            "min_tokens_to_satisfy": self.min_tokens_to_satisfy(),
        }
        out["solve_seconds"] = round(self.solution.solve_seconds, 4)
        out["compile_ms"] = round(self.compile_seconds * 1000, 2)
        out["cache_key"] = self.solution.key
        return out
