"""Token costs of the required words: the budget check, the placement plan and the end-game.

A compliant answer must contain its required words before `max_tokens` runs out, and a useful one
has them inside its sentences. The planner knows how many tokens each required word costs (its
cheapest spelling: with or without a leading space, capitalized or not), so it can

- refuse a budget that can never fit the required words (`min_tokens`, checked at admission);
- schedule the planned words early in the answer, one every `gap` tokens, with a score boost
  that grows once a word is due (`boost`), so that the model places each one inside a sentence
  where it fits, and is forced to only when it never does;
- steer toward the cheapest completion once the remaining budget only just fits the missing
  words (`cheapest`), whatever the placement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable
from typing import Any

from .requirements import Requirements
from .types import dedupe

#: Above this many combinations of alternatives the planner picks each slot's cheapest alone.
MAX_PLAN_COMBINATIONS = 4096
#: Tokens between the deadlines of two planned words (at most / at least), from the start.
MAX_GAP = 16
MIN_GAP = 3
#: Score boost of a planned word's first token inside a sentence, before it is due.
EARLY_BOOST = 2.0
#: Once due, the boost grows from `DUE_BOOST` to `LAST_BOOST` over at most `WINDOW` tokens; a
#: word still not placed at its deadline is forced.
DUE_BOOST = 3.0
LAST_BOOST = 10.0
WINDOW = 12
#: Tokens at least between the placement of one planned word and the time the next falls due.
MIN_SPACING = 4


class RequiredWordPlanner:
    """The cheapest way (in tokens) to complete the requirements, and the placement schedule."""

    def __init__(self, requirements: Requirements, tokenizer: Any) -> None:
        self.requirements = requirements
        self._variants = self._tokenize(requirements.steering_words(), tokenizer)
        #: Fewest tokens any compliant answer needs (its required words; EOS not counted).
        self.min_tokens, self.min_words = self.cheapest(set())

    @staticmethod
    def _tokenize(words: tuple[str, ...], tokenizer: Any) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per word, the token ids of " w", " W", "w", "W" (in that order)."""
        variants = [
            v
            for w in words
            for v in (f" {w}", f" {w[0].upper()}{w[1:]}", w, f"{w[0].upper()}{w[1:]}")
        ]
        if not variants:
            return {}
        enc = tokenizer(variants, add_special_tokens=False)["input_ids"]
        return {w: tuple(tuple(ids) for ids in enc[4 * k : 4 * k + 4]) for k, w in enumerate(words)}

    def cost(self, word: str) -> int:
        return min(len(v) for v in self._variants[word])

    def cheapest(self, written: Collection[str]) -> tuple[int, list[str]]:
        """Cheapest set of words (by token count) that completes the requirements, given the
        words already `written`.

        Pair and set slots try every combination of their candidates (up to
        `MAX_PLAN_COMBINATIONS`); include slots then take their cheapest offered words, counting
        the words the combination already brings.
        """
        needs = self.requirements.needs
        options = [n.completions(written) for n in needs if not n.is_include]
        options = [o for o in options if o]
        combos: Iterable[tuple[tuple[str, ...], ...]]
        if math.prod(len(o) for o in options) <= MAX_PLAN_COMBINATIONS:
            combos = itertools.product(*options)
        else:
            combos = [tuple(min(o, key=self._alt_cost) for o in options)]
        best: tuple[int, list[str]] | None = None
        for combo in combos:
            words = list(dedupe(w for alt in combo for w in alt))
            have = set(written) | set(words)
            for n in needs:
                if not n.is_include:
                    continue
                short = n.min_count - n.count(have)
                if short > 0:
                    extra = sorted((w for w in n.offered if w not in have), key=self.cost)[:short]
                    words += extra
                    have.update(extra)
            cost = sum(self.cost(w) for w in words)
            if best is None or cost < best[0]:
                best = (cost, words)
        return best if best is not None else (0, [])

    def _alt_cost(self, alt: tuple[str, ...]) -> int:
        return sum(self.cost(w) for w in alt)

    def sequences(self, words: Iterable[str], *, glued: bool) -> list[tuple[int, ...]]:
        """Canonical token sequences of `words`, in every form that can come next.

        After a word only the space-led forms (" said", " Said") make sense: the bare forms
        would glue onto it ("cat" + "s..."). Otherwise every form is offered; the grammar mask
        decides which of them is valid.
        """
        forms = slice(0, 2) if glued else slice(0, 4)
        return [v for w in words for v in self._variants.get(w, ())[forms]]

    def placement(self, word: str, *, glued: bool) -> tuple[tuple[int, ...], ...]:
        """The token sequence of `word` inside a sentence: lowercase, space-led after a word or
        a comma, bare after a space ("I" stays capital)."""
        forms = self._variants.get(word)
        if not forms:
            return ()
        if word == "i":
            return (forms[1],) if glued else (forms[3],)
        return (forms[0],) if glued else (forms[2],)

    def gap(self, budget: int) -> int:
        """Tokens between two deadlines: the planned words are spread over the first part of the
        budget (at most `MAX_GAP` apart, so that they come early in a long answer and the model
        is free to end), leaving room for the words and the end-game steering."""
        n = len(self.requirements.chosen)
        return max(MIN_GAP, min(MAX_GAP, (budget - self.min_tokens - 2) // (n + 1)))

    def boost(self, k: int, placed: int, written: int, budget: int, last: int) -> float:
        """Score boost of the `k`-th pending planned word after `written` tokens, `placed` planned
        words having been placed, the last one at token `last` (`math.inf`: force it now).

        Only the first pending word falls due: its deadline is `gap * (placed + 1)` tokens, its
        window the `WINDOW` tokens before (starting `MIN_SPACING` after the last placement at the
        earliest); the others keep the early boost.
        """
        if k > 0:
            return EARLY_BOOST
        gap = self.gap(budget)
        window = min(WINDOW, gap)
        due = max(gap * (placed + 1) - window, last + MIN_SPACING)
        if written < due:
            return EARLY_BOOST
        if written >= due + window:
            return math.inf
        return DUE_BOOST + (LAST_BOOST - DUE_BOOST) * (written - due) / window

    def placement_cost(self, words: Iterable[str]) -> int:
        """Tokens to place `words` inside sentences: each word and a word after it."""
        return sum(self.cost(w) + 2 for w in words)
