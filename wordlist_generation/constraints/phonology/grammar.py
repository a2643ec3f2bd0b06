"""Compile a solved request into a llguidance Lark grammar.

Free words are the allowed vocabulary; "the answer contains these words, in any order" is not a
regular-language blow-up here because llguidance rules can carry a 64-bit parameter: every required
word (and every group of an `include` target set) owns a bit, a word sets its bits when it is
written, and the end of the answer is only reachable once the bit condition holds. Words are
lexemes grouped by the set of bits they set, so no string belongs to two lexemes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..separators import separator_regexes
from .errors import GrammarTooLarge
from .solve import RequiredSlot, Solution

#: Bits available in one llguidance rule parameter.
MAX_GRAMMAR_BITS = 64

#: The one separator rule between words (`constraints.separators`): bounded closing punctuation,
#: an optional spaced dash, one space / newline / blank line, bounded opening punctuation. Bounded
#: so decoding cannot drift into filler.
_SEPARATORS = separator_regexes()
SEP_REGEX = _SEPARATORS.gap_lark
LEAD_REGEX = _SEPARATORS.lead_lark
END_REGEX = _SEPARATORS.tail_lark


def _and(conds: Sequence[str]) -> str:
    if not conds:
        return "true"
    if len(conds) == 1:
        return conds[0]
    return f"and({conds[0]}, {_and(conds[1:])})"


def _or(conds: Sequence[str]) -> str:
    if len(conds) == 1:
        return conds[0]
    return f"or({conds[0]}, {_or(conds[1:])})"


def words_regex(words: Iterable[str]) -> str:
    """A Lark regex literal matching each word, lowercase or with a capital first letter.

    Factored by first letter so the regex stays compact for tens of thousands of words.
    """
    by_first: dict[str, set[str]] = {}
    for w in words:
        by_first.setdefault(w[0], set()).add(w[1:])
    parts = []
    for first in sorted(by_first):
        rests = sorted(by_first[first], key=lambda s: (-len(s), s))
        body = "|".join(rests)
        cls = f"[{first}{first.upper()}]" if first.upper() != first else first
        parts.append(f"{cls}(?:{body})" if body else cls)
    return "/" + "|".join(parts) + "/"


@dataclass(frozen=True)
class SlotRequirement:
    """How one required slot is encoded: alternatives (bit sets) or include groups."""

    slot: RequiredSlot
    alternatives: tuple[tuple[str, ...], ...] = ()  # pair/set: words of each kept candidate
    groups: tuple[tuple[str, ...], ...] = ()  # include: disjoint word groups, one bit each
    group_bits: tuple[int, ...] = ()

    def condition(self, bit_of: Mapping[str, int]) -> str:
        if self.groups:
            return _and([f"bit_set({b})" for b in self.group_bits])
        return _or([_and([f"bit_set({bit_of[w]})" for w in alt]) for alt in self.alternatives])

    def satisfied(self, bits: int, bit_of: Mapping[str, int]) -> bool:
        if self.groups:
            return all(bits >> b & 1 for b in self.group_bits)
        return any(all(bits >> bit_of[w] & 1 for w in alt) for alt in self.alternatives)


@dataclass(frozen=True)
class GrammarPlan:
    """Bit layout and lexeme classes of the grammar compiled from a `Solution`.

    Every required word of a kept pair/set candidate owns a bit; an `include` slot with
    `min_count` m splits its target words into m disjoint groups (round-robin by frequency, so each
    group keeps common words) with one bit each, which makes the m words distinct by
    construction. A word's *signature* is the set of bits it sets; words with the same signature
    share one lexeme, so lexemes never overlap.
    """

    solution: Solution
    requirements: tuple[SlotRequirement, ...]
    bit_of: Mapping[str, int]  # required (pair/set) word -> bit
    signature: Mapping[str, int]  # word -> bits it sets (only words with bits)
    classes: tuple[tuple[int, tuple[str, ...]], ...]  # (bits, words), non-empty signatures
    free_words: tuple[str, ...]
    n_bits: int

    @classmethod
    def build(cls, solution: Solution, max_alternatives: int | None = None) -> GrammarPlan:
        allowed_set = set(solution.allowed_words)
        relation_slots = [s for s in solution.slots if s.kind == "relation"]
        include_slots = [s for s in solution.slots if s.kind == "include"]
        n_include_bits = sum(s.constraint.min_count for s in include_slots)
        alts = {
            s.constraint_index: min(len(s.candidates), max_alternatives or solution.top_k)
            for s in relation_slots
        }

        def n_word_bits() -> int:
            return len(
                {
                    w
                    for s in relation_slots
                    for c in s.candidates[: alts[s.constraint_index]]
                    for w in c.words
                }
            )

        while n_include_bits + n_word_bits() > MAX_GRAMMAR_BITS:
            widest = max(alts, key=lambda k: alts[k], default=None)
            if widest is None or alts[widest] <= 1:
                raise GrammarTooLarge(
                    f"the required words need {n_include_bits + n_word_bits()} grammar bits "
                    f"(at most {MAX_GRAMMAR_BITS}); lower min_count or use fewer contrasts"
                )
            alts[widest] -= 1

        bit_of: dict[str, int] = {}
        requirements: list[SlotRequirement] = []
        signature: dict[str, int] = {}
        next_bit = 0
        for s in solution.slots:
            if s.kind == "relation":
                kept_cands = s.candidates[: alts[s.constraint_index]]
                kept = tuple(c.words for c in kept_cands)
                for cand in kept_cands:
                    for w, spellings in zip(
                        cand.words, cand.spellings or [(w,) for w in cand.words], strict=True
                    ):
                        if w not in bit_of:
                            bit_of[w] = next_bit
                            next_bit += 1
                        for sp in spellings:
                            signature[sp] = signature.get(sp, 0) | (1 << bit_of[w])
                requirements.append(SlotRequirement(s, alternatives=kept))
            else:
                m = s.constraint.min_count
                groups = tuple(s.target_words[g::m] for g in range(m))
                bits = tuple(range(next_bit, next_bit + m))
                next_bit += m
                for g, words in zip(bits, groups, strict=True):
                    for w in words:
                        signature[w] = signature.get(w, 0) | (1 << g)
                requirements.append(SlotRequirement(s, groups=groups, group_bits=bits))
        assert all(w in allowed_set for w in signature), "required words must be allowed"
        by_sig: dict[int, list[str]] = {}
        for w in solution.allowed_words:
            sig = signature.get(w)
            if sig:
                by_sig.setdefault(sig, []).append(w)
        free = tuple(w for w in solution.allowed_words if w not in signature)
        return cls(
            solution=solution,
            requirements=tuple(requirements),
            bit_of=bit_of,
            signature=signature,
            classes=tuple((sig, tuple(ws)) for sig, ws in sorted(by_sig.items())),
            free_words=free,
            n_bits=next_bit,
        )

    def condition(self) -> str:
        return _and([r.condition(self.bit_of) for r in self.requirements])

    def satisfied(self, bits: int) -> bool:
        return all(r.satisfied(bits, self.bit_of) for r in self.requirements)

    def bits_of_words(self, words: Iterable[str]) -> int:
        bits = 0
        for w in words:
            bits |= self.signature.get(w.lower(), 0)
        return bits

    def lark(self) -> str:
        """The llguidance Lark grammar text."""
        head = ["%llguidance {}", ""]
        terminals = [
            f"SEP: {SEP_REGEX}",
            f"LEAD: {LEAD_REGEX}",
            f"END: {END_REGEX}",
        ]
        if not self.requirements:
            return (
                "\n".join(
                    head
                    + [
                        "start: LEAD? FREE (SEP FREE)* END?",
                        f"FREE: {words_regex(self.free_words)}",
                    ]
                    + terminals
                )
                + "\n"
            )
        cond = self.condition()
        free = bool(self.free_words)
        lead = "f* " if free else ""
        p_alts = []
        if free:
            p_alts.append(f"f* FREE %if {cond}")
        rules = []
        for k, (sig, words) in enumerate(self.classes):
            p_alts.append(f"{lead}C{k} q::bit_or({sig:#x})")
            terminals.append(f"C{k}: {words_regex(words)}")
        rules.append("start: LEAD? p::0x0 END?")
        rules.append("p::_ : " + "\n     | ".join(p_alts))
        rules.append(f'q::_ : "" %if {cond}\n     | SEP p::_')
        if free:
            rules.append("f: FREE SEP")
            terminals.append(f"FREE: {words_regex(self.free_words)}")
        return "\n".join(head + rules + terminals) + "\n"

    def describe(self) -> dict[str, Any]:
        return {
            "n_bits": self.n_bits,
            "n_free_words": len(self.free_words),
            "lexeme_classes": [
                {"bits": f"{sig:#x}", "n_words": len(ws)} for sig, ws in self.classes
            ],
            "alternatives": {
                r.slot.constraint_index: [list(a) for a in r.alternatives]
                for r in self.requirements
                if r.alternatives
            },
        }


def compile_grammar(solution: Solution, *, max_alternatives: int | None = None) -> str:
    """The Lark grammar for `solution` (see `GrammarPlan`)."""
    return GrammarPlan.build(solution, max_alternatives).lark()
