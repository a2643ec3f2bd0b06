"""The engine's view of a solved phonological request: a compiled grammar plus its extras.

Sequence states are `llg.LlguidanceSequence`s (one llguidance matcher each). When told the
remaining token budget they steer toward the missing required words once the budget only just
fits them (`steering`). The constraint declares the optional capabilities of
`CompiledConstraint`: soft scores (drafts), a budget check and an exported Lark grammar.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ..base import CheckReport, CompiledConstraint, ExportedGrammar
from ..bitmask import ids_to_bool, pack
from ..llg import LlguidanceSequence, new_matcher
from ..tokenizer import TokenizerTables
from .check import Verdict, answer_words, check_text, present_words, soft_total
from .errors import BudgetTooSmall
from .grammar import GrammarPlan
from .lexicon import Lexicon
from .phonemes import expand_exclusion
from .solve import Solution
from .steering import RequiredWordPlanner

#: llguidance limits sized for a whole-lexicon grammar: the default lexer fuel (1e6) is exhausted
#: by tens of thousands of word alternatives in one lexeme class, and the matcher then enters an
#: error state that only allows EOS. These are what a 45,000-word lexicon with a few
#: required-word classes needs, with headroom.
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
    + "). The steering toward required words near the end of max_tokens is not part of the "
    "grammar: an engine that runs it alone may reach max_tokens before the required words."
)


def parser_limits() -> Any:
    """`PARSER_LIMITS` as llguidance's own object."""
    import llguidance

    return llguidance.LLParserLimits(**PARSER_LIMITS)


class PhonologicalSequence(LlguidanceSequence):
    """Decoding state: an `LLMatcher` plus optional budget steering.

    The decoding loop may call `set_remaining_tokens(n)` before each mask; when the remaining
    budget only just fits the missing required words, the mask is narrowed to the canonical
    tokens of those words (still intersected with the grammar, so compliance is kept).
    """

    def __init__(self, owner: PhonologicalConstraint, matcher: Any) -> None:
        super().__init__(matcher, owner.tables)
        self._owner = owner
        self._tokens: list[int] = []
        self._remaining: int | None = None
        self._steer_prefix: list[int] = []
        self._steer_seqs: list[tuple[int, ...]] | None = None  # never mutated, only replaced

    def fork(self) -> PhonologicalSequence:
        other = super().fork()
        other._tokens = list(self._tokens)
        other._steer_prefix = list(self._steer_prefix)
        return other

    def _consume(self, token_id: int) -> bool:
        ok = super()._consume(token_id)
        self._tokens.append(token_id)
        if self._steer_seqs:
            prefix = self._steer_prefix + [token_id]
            k = len(prefix)
            # Stay on a steered word until its last token; anything else drops the path.
            ongoing = any(len(s) > k and s[:k] == tuple(prefix) for s in self._steer_seqs)
            self._steer_prefix = prefix if ongoing else []
        self._steer_seqs = None
        if self._remaining is not None:
            self._remaining -= 1
        return ok

    def set_remaining_tokens(self, remaining: int) -> None:
        """Tokens that may still be generated, counting the next one."""
        self._remaining = remaining

    def text(self) -> str:
        return self._owner.decode(self._tokens)

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        if self._remaining == 1 and self.can_end():
            # The last token of the budget: a complete, compliant answer ends here (the caller
            # allows EOS) rather than starting a word that max_tokens would cut and trim away,
            # possibly taking a required word with it ("so" -> "sof").
            return True
        super().fill_bitmask(bitmask)
        steer = [t for t in self._steering_tokens() if t < bitmask.shape[0] * 32]
        if steer:
            narrowed = bitmask & pack(ids_to_bool(steer, bitmask.shape[0] * 32), bitmask.shape[0])
            if narrowed.any():
                bitmask.copy_(narrowed)
        return True

    def _steering_tokens(self) -> set[int]:
        owner = self._owner
        if self._remaining is None or self._remaining > owner.steer_horizon:
            return set()  # far from the end of the budget: no need to look at the text
        text = self.text()
        needed, _ = owner.planner.tokens_needed(text)
        if needed == 0 or self._remaining > needed + owner.steer_slack:
            return set()
        seqs = owner.planner.steering_sequences(text)
        k = len(self._steer_prefix)
        prefix = tuple(self._steer_prefix)
        self._steer_seqs = [s for s in seqs if len(s) > k and s[:k] == prefix]
        return {s[k] for s in self._steer_seqs}


class PhonologicalConstraint(CompiledConstraint):
    """A solved phonological request compiled for one tokenizer (immutable, cacheable)."""

    def __init__(
        self,
        solution: Solution,
        lexicon: Lexicon,
        tables: TokenizerTables,
        *,
        max_alternatives: int | None = None,
        steer_slack: int = 1,
    ) -> None:
        t0 = time.perf_counter()
        self.solution = solution
        self.lexicon = lexicon
        self.tables = tables
        self.plan = GrammarPlan.build(solution, max_alternatives)
        self.grammar = self.plan.lark()
        self.steer_slack = steer_slack
        self._matcher = new_matcher(
            tables.ll, self.grammar, limits=parser_limits(), what="phonological grammar"
        )
        self._allowed = frozenset(solution.allowed_words)
        self.planner = RequiredWordPlanner(self.plan, tables.tokenizer)
        #: Steering can only start once the remaining budget is at most this.
        self.steer_horizon = self.planner.min_tokens + steer_slack if self.plan.requirements else -1
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
        return ExportedGrammar("lark", self.grammar, tokenizer_note=TOKENIZER_NOTE)

    def prompt_hint(self) -> str | None:
        parts = ["Write in plain, simple English words."]
        for r in self.plan.requirements:
            c = r.slot.constraint
            if r.alternatives:
                words = " and ".join(f'"{w}"' for w in r.alternatives[0])
                parts.append(f"You must use the words {words} in your answer.")
            else:
                examples = ", ".join(f'"{w}"' for w in r.slot.target_words[:6])
                parts.append(
                    f"Use at least {c.min_count} different word(s) with the sound /{'/, /'.join(c.phonemes)}/"
                    f" ({c.position} position), for example {examples}."
                )
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
        out["required_words"] = self.solution.required_words()
        out["grammar"] = self.plan.describe() | {
            "chars": len(self.grammar),
            "min_tokens_to_satisfy": self.min_tokens_to_satisfy(),
        }
        out["solve_seconds"] = round(self.solution.solve_seconds, 4)
        out["compile_ms"] = round(self.compile_seconds * 1000, 2)
        out["cache_key"] = self.solution.key
        return out
