"""The required words of a solved request, as a decoding state checks them: which words count,
when a slot is met, and which words the plan places next.

Each required slot of a `Solution` becomes a `Need`:

- an `include` slot is met by `min_count` distinct words of its target set (every allowed word
  with the sound at the position, not only the suggested ones);
- a pair or set slot is met by every word of one kept candidate (the best `top_k` pairs or sets),
  any allowed homophone spelling of a word counting for it ("mat" or "matt").

Before generating, the plan chooses the words to use (`Requirements.chosen`, from
`Solution.required_words`: each pair or set slot's best candidate, then the most frequent include
words those do not bring), which the prompt hint names and the steering places. The model may
meet a slot with other words; the plan then asks for no more.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .solve import RequiredSlot, Solution
from .types import dedupe

#: Target words of an include slot offered to the steering and the token planner, beyond the
#: chosen ones (most frequent first).
OFFERED_INCLUDE_WORDS = 24


@dataclass(frozen=True)
class Need:
    """One required slot: what meets it and what the plan suggests for it."""

    slot: RequiredSlot
    #: include: distinct target words needed (0 for a pair or set).
    min_count: int = 0
    #: include: every allowed target word.
    targets: frozenset[str] = frozenset()
    #: include: the words offered, the chosen ones first, then by frequency.
    offered: tuple[str, ...] = ()
    #: pair/set: per kept candidate, per word, its accepted spellings (the word first).
    alternatives: tuple[tuple[tuple[str, ...], ...], ...] = ()

    @classmethod
    def of(cls, slot: RequiredSlot) -> Need:
        if slot.kind == "include":
            offered = dedupe((*slot.chosen, *slot.target_words[:OFFERED_INCLUDE_WORDS]))
            return cls(
                slot,
                min_count=slot.constraint.min_count,
                targets=frozenset(slot.target_words),
                offered=offered,
            )
        alts = tuple(
            tuple(
                sps if sps and sps[0] == w else (w, *sps)
                for w, sps in zip(c.words, c.spellings or [(w,) for w in c.words], strict=True)
            )
            for c in slot.candidates
        )
        return cls(slot, alternatives=alts)

    @property
    def is_include(self) -> bool:
        return self.slot.kind == "include"

    def count(self, words: Collection[str]) -> int:
        """include: how many distinct target words `words` holds."""
        if len(words) < len(self.targets):
            return sum(1 for w in words if w in self.targets)
        return sum(1 for w in self.targets if w in words)

    def satisfied(self, words: Collection[str]) -> bool:
        if self.is_include:
            return self.count(words) >= self.min_count
        return any(self._missing(alt, words) == () for alt in self.alternatives)

    @staticmethod
    def _missing(alt: tuple[tuple[str, ...], ...], words: Collection[str]) -> tuple[str, ...]:
        return tuple(sps[0] for sps in alt if not any(s in words for s in sps))

    def completions(self, words: Collection[str]) -> list[tuple[str, ...]]:
        """pair/set: per kept candidate, its words `words` lacks (empty list when met)."""
        missing = [self._missing(alt, words) for alt in self.alternatives]
        return [] if any(m == () for m in missing) else missing

    def suggestions(self, words: Collection[str]) -> tuple[str, ...]:
        """The planned words this slot still needs, given `words` (chosen ones first)."""
        if self.is_include:
            need = self.min_count - self.count(words)
            if need <= 0:
                return ()
            return tuple(w for w in self.offered if w not in words)[:need]
        options = self.completions(words)
        if not options:
            return ()
        return min(options, key=len)  # the fewest missing words; the best candidate on ties


class Requirements:
    """Every required slot of a solution, and the words chosen before generating."""

    def __init__(self, solution: Solution) -> None:
        self.needs = tuple(Need.of(s) for s in solution.slots)
        #: The words the plan places (the prompt hint names them), in slot order.
        self.chosen: tuple[str, ...] = tuple(solution.required_words())

    def __bool__(self) -> bool:
        return bool(self.needs)

    def satisfied(self, words: Collection[str]) -> bool:
        return all(n.satisfied(words) for n in self.needs)

    def pending(self, words: Collection[str]) -> tuple[str, ...]:
        """The planned words still to place, given the words already placed, in slot order.

        Pair and set slots are planned first, so that an include slot counts the words they
        will bring ("said/says" are two /s/-initial words).
        """
        planned = {i: n.suggestions(words) for i, n in enumerate(self.needs) if not n.is_include}
        have = set(words).union(*planned.values())
        for i, n in enumerate(self.needs):
            if n.is_include:
                planned[i] = n.suggestions(have)
                have.update(planned[i])
        return dedupe(w for i in range(len(self.needs)) for w in planned[i])

    def steering_words(self) -> tuple[str, ...]:
        """Every word the steering may ask for (its token costs are computed once)."""
        words: list[str] = list(self.chosen)
        for n in self.needs:
            words.extend(n.offered)
            words.extend(sps[0] for alt in n.alternatives for sps in alt)
        return dedupe(words)

    def describe(self) -> dict[str, Any]:
        accepted: list[dict[str, Any]] = []
        for n in self.needs:
            entry: dict[str, Any] = {"constraint_index": n.slot.constraint_index}
            if n.is_include:
                entry |= {"min_count": n.min_count, "n_target_words": len(n.targets)}
            else:
                entry["alternatives"] = [[sps[0] for sps in alt] for alt in n.alternatives]
            accepted.append(entry)
        return {"chosen": list(self.chosen), "accepted": accepted}
