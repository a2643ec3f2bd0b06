"""Token costs of the required words: the budget check and the steering near the end of it.

A compliant answer must contain its required words before `max_tokens` runs out. The planner knows
how many tokens each required word costs (its cheapest spelling: with or without a leading space,
capitalized or not), so it can refuse a budget that can never fit them, and tell a decoding state
which words to steer toward once the remaining budget only just fits the missing ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

from .check import answer_words
from .grammar import GrammarPlan
from .types import dedupe

#: Most frequent words of each include group offered to the budget steering.
STEERING_WORDS_PER_GROUP = 20
#: Cheapest words of each include group the planner considers.
PLAN_WORDS_PER_GROUP = 3
#: Above this many combinations of alternatives the planner picks each slot's cheapest alone.
MAX_PLAN_COMBINATIONS = 4096


class RequiredWordPlanner:
    """The cheapest way (in tokens) to complete a grammar plan's requirements."""

    def __init__(self, plan: GrammarPlan, tokenizer: Any) -> None:
        self.plan = plan
        self._variants = self._tokenize_required_words(tokenizer)
        #: Fewest tokens any compliant answer needs (its required words; EOS not counted).
        self.min_tokens, self.min_words = self.cheapest(0)

    def _tokenize_required_words(self, tokenizer: Any) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per required word, the token ids of " w", " W", "w", "W" (in that order)."""
        words: list[str] = []
        for r in self.plan.requirements:
            words.extend(w for alt in r.alternatives for w in alt)
            for g in r.groups:
                words.extend(g[:STEERING_WORDS_PER_GROUP])
        unique = dedupe(words)
        variants = [
            v
            for w in unique
            for v in (f" {w}", f" {w[0].upper()}{w[1:]}", w, f"{w[0].upper()}{w[1:]}")
        ]
        if not variants:
            return {}
        enc = tokenizer(variants, add_special_tokens=False)["input_ids"]
        return {
            w: tuple(tuple(ids) for ids in enc[4 * k : 4 * k + 4]) for k, w in enumerate(unique)
        }

    def cost(self, word: str) -> int:
        return min(len(v) for v in self._variants[word])

    def _options(self, bits: int) -> list[list[tuple[str, ...]]]:
        """Per unmet requirement, the word tuples that would meet it."""
        plan = self.plan
        options: list[list[tuple[str, ...]]] = []
        for r in plan.requirements:
            if r.satisfied(bits, plan.bit_of):
                continue
            if r.alternatives:
                # only the words of each alternative not written yet cost anything
                options.append(
                    [
                        tuple(w for w in alt if not bits >> plan.bit_of[w] & 1)
                        for alt in r.alternatives
                    ]
                )
                continue
            for b, g in zip(r.group_bits, r.groups, strict=True):
                if not bits >> b & 1:
                    cheapest = sorted(g[:STEERING_WORDS_PER_GROUP], key=self.cost)
                    options.append([(w,) for w in cheapest[:PLAN_WORDS_PER_GROUP]])
        return options

    def cheapest(self, bits: int) -> tuple[int, list[str]]:
        """Cheapest set of words (by token count) that completes the requirements from `bits`."""
        options = self._options(bits)
        if not options:
            return 0, []
        combos: Iterable[tuple[tuple[str, ...], ...]]
        if math.prod(len(o) for o in options) <= MAX_PLAN_COMBINATIONS:
            combos = itertools.product(*options)
        else:
            combos = [
                tuple(min(o, key=lambda alt: sum(self.cost(w) for w in alt)) for o in options)
            ]
        best: tuple[int, list[str]] | None = None
        for combo in combos:
            words = list(dedupe(w for alt in combo for w in alt))
            cost = sum(self.cost(w) for w in words)
            if best is None or cost < best[0]:
                best = (cost, words)
        assert best is not None
        return best

    def tokens_needed(self, text: str) -> tuple[int, list[str]]:
        """Tokens still needed for the missing required words, and those words.

        A trailing word counts as written even though it could still grow ("has" -> "hasn't"):
        if it does grow, the next call sees the longer word and plans for the loss again.
        """
        return self.cheapest(self.plan.bits_of_words(answer_words(text)))

    def steering_sequences(self, text: str) -> list[tuple[int, ...]]:
        """Canonical token sequences of the words the cheapest completion still needs.

        After a letter only the space-led forms (" said", " Said") make sense: the bare forms
        would glue onto the previous word ("cat" + "s..."). After a separator, or at the very
        start, every form is offered; the grammar mask decides which of them is valid.
        """
        _, words = self.tokens_needed(text)
        glued = bool(text) and (text[-1].isalpha() or text[-1] == "'")
        forms = slice(0, 2) if glued else slice(0, 4)
        return [v for w in words for v in self._variants.get(w, ())[forms]]
