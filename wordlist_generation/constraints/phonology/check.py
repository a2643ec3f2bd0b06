"""The independent re-check of a final answer against every phonological constraint.

The text is re-tokenized into words independently of the grammar and every word is looked up in
CMUdict directly (not in the lexicon frame), so a bug in the frame or the grammar cannot certify
its own output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .lexicon import Lexicon
from .phonemes import VOWELS, expand_exclusion, pron_to_ipa
from .solve import RequiredSlot, Solution

#: What counts as a word in an answer (same alphabet as the lexicon, any case).
ANSWER_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@dataclass(frozen=True)
class Verdict:
    """The re-check of one constraint (constraint_index None: the vocabulary itself)."""

    constraint_index: int | None
    type: str
    ok: bool
    message: str
    soft: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "constraint_index": self.constraint_index,
            "type": self.type,
            "ok": self.ok,
            "soft": self.soft,
            "message": self.message,
            "details": self.details,
        }


def answer_words(text: str) -> list[str]:
    """Words of an answer, lowercased, in order (the re-check's own tokenization)."""
    return [m.group(0).lower() for m in ANSWER_WORD_RE.finditer(text)]


class _WordFacts:
    """Per-word facts read straight from CMUdict and wordfreq (not from the lexicon frame)."""

    def __init__(self, lexicon: Lexicon) -> None:
        self._lexicon = lexicon
        self._cache: dict[str, tuple[list[list[str]], float]] = {}

    def get(self, word: str) -> tuple[list[list[str]], float]:
        if word not in self._cache:
            import wordfreq

            prons = [pron_to_ipa(p)[0] for p in self._lexicon.raw_pronunciations(word)]
            self._cache[word] = (prons, wordfreq.zipf_frequency(word, "en"))
        return self._cache[word]

    def norm(self, word: str, norm: str) -> float | None:
        prons, zipf = self.get(word)
        if norm == "zipf":
            return zipf
        if norm == "letters":
            return float(len(word.replace("'", "")))
        if not prons:
            return None
        if norm == "phonemes":
            return float(len(prons[0]))
        return float(sum(1 for p in prons[0] if p in VOWELS))


def _at_position(pron: Sequence[str], i: int, position: str) -> bool:
    n = len(pron)
    return {
        "initial": i == 0,
        "final": i == n - 1,
        "medial": 0 < i < n - 1,
        "any": True,
    }[position]


def _frames(
    words: Iterable[str], facts: _WordFacts, phonemes: set[str], position: str
) -> dict[str, dict[str, str]]:
    """masked frame -> {phoneme: word} over the answer's distinct words (first pronunciation)."""
    out: dict[str, dict[str, str]] = {}
    for w in words:
        prons, _ = facts.get(w)
        if not prons:
            continue
        pron = prons[0]
        for i, p in enumerate(pron):
            if p in phonemes and _at_position(pron, i, position):
                key = " ".join(pron[:i]) + "|_|" + " ".join(pron[i + 1 :])
                out.setdefault(key, {}).setdefault(p, w)
    return out


def present_words(slot: RequiredSlot | None, seen: set[str]) -> dict[str, bool]:
    """Which suggested words of `slot` the answer uses (a homophone spelling counts)."""
    if slot is None:
        return {}
    if slot.kind == "include" or not slot.candidates:
        return {w: w in seen for w in slot.chosen}
    best = slot.candidates[0]
    spellings = best.spellings or tuple((w,) for w in best.words)
    return {w: any(sp in seen for sp in sps) for w, sps in zip(best.words, spellings, strict=True)}


@dataclass
class _Answer:
    """One answer as every per-constraint check sees it."""

    words: list[str]
    distinct: list[str]
    facts: _WordFacts
    slots: dict[int, RequiredSlot]

    def present(self, i: int) -> dict[str, bool]:
        return present_words(self.slots.get(i), set(self.distinct))


def _check_exclude(ans: _Answer, i: int, c: Any) -> Verdict:
    banned = expand_exclusion(c.phonemes)
    offending = {}
    for w in ans.distinct:
        prons, _ = ans.facts.get(w)
        if not prons:
            offending[w] = "no pronunciation in CMUdict"
            continue
        hit = sorted({p for pr in prons for p in pr if p in banned})
        if hit:
            offending[w] = " ".join(hit)
    return Verdict(
        i,
        c.type,
        not offending,
        "no excluded sound"
        if not offending
        else f"{len(offending)} word(s) contain excluded sounds",
        details={"offending": offending, "excluded": sorted(banned)},
    )


def _check_bound(ans: _Answer, i: int, c: Any) -> Verdict:
    values = {w: ans.facts.norm(w, c.norm) for w in ans.distinct}
    out_of_range = {w: v for w, v in values.items() if not c.value_in_range(v)}
    inside = sum(1 for w in ans.words if c.value_in_range(values[w]))
    frac = inside / len(ans.words) if ans.words else 0.0
    soft = c.type == "bound_boost"
    details: dict[str, Any] = {"out_of_range": out_of_range, "fraction_in_range": round(frac, 4)}
    if soft:
        details["score"] = round(c.weight * frac, 4)
    return Verdict(
        i,
        c.type,
        soft or not out_of_range,
        f"{inside}/{len(ans.words)} words within {c.label()}",
        soft=soft,
        details=details,
    )


def _check_include(ans: _Answer, i: int, c: Any) -> Verdict:
    phons = set(c.phonemes)
    hits = []
    for w in ans.distinct:
        prons, _ = ans.facts.get(w)
        if prons and any(
            p in phons and _at_position(prons[0], k, c.position) for k, p in enumerate(prons[0])
        ):
            hits.append(w)
    return Verdict(
        i,
        c.type,
        len(hits) >= c.min_count,
        f"{len(hits)} of {c.min_count} required words with /{' '.join(c.phonemes)}/ {c.position}",
        details={
            "words": hits,
            "needed": c.min_count,
            "missing": max(0, c.min_count - len(hits)),
            "suggested": ans.present(i),
        },
    )


def _relation_details(ans: _Answer, i: int, key: str, found: list[list[str]]) -> dict[str, Any]:
    present = ans.present(i)
    return {
        key: found,
        "required_words": present,
        "missing": [w for w, ok in present.items() if not ok],
    }


def _check_pair(ans: _Answer, i: int, c: Any) -> Verdict:
    frames = _frames(ans.distinct, ans.facts, {c.phoneme1, c.phoneme2}, c.position)
    found = [
        [d[c.phoneme1], d[c.phoneme2]]
        for d in frames.values()
        if c.phoneme1 in d and c.phoneme2 in d
    ]
    details = _relation_details(ans, i, "pairs_found", found)
    if c.type == "contrastive_maxopp":
        details["feature_difference"] = c.features
    return Verdict(
        i,
        c.type,
        bool(found),
        f"minimal pair found: {found[0][0]}/{found[0][1]}"
        if found
        else f"no minimal pair /{c.phoneme1}/~/{c.phoneme2}/ {c.position} in the answer",
        details=details,
    )


def _check_set(ans: _Answer, i: int, c: Any) -> Verdict:
    frames = _frames(ans.distinct, ans.facts, {c.substitute, *c.targets}, c.position)
    found = []
    for d in frames.values():
        tg = [p for p in c.targets if p in d]
        if c.substitute in d and len(tg) >= c.n_targets:
            found.append([d[c.substitute]] + [d[p] for p in tg])
    return Verdict(
        i,
        c.type,
        bool(found),
        f"minimal set found: {'/'.join(found[0])}"
        if found
        else f"no minimal set /{c.substitute}/ vs {c.n_targets} of /{' '.join(c.targets)}/ in the answer",
        details=_relation_details(ans, i, "sets_found", found),
    )


_CHECKS: dict[str, Callable[[_Answer, int, Any], Verdict]] = {
    "exclude": _check_exclude,
    "bound": _check_bound,
    "bound_boost": _check_bound,
    "include": _check_include,
    "contrastive_minpair": _check_pair,
    "contrastive_maxopp": _check_pair,
    "contrastive_multopp": _check_set,
}


def check_text(text: str, solution: Solution, lexicon: Lexicon) -> list[Verdict]:
    """Re-check a final answer against every constraint, independently of grammar and frame."""
    words = answer_words(text)
    distinct = list(dict.fromkeys(words))
    ans = _Answer(
        words, distinct, _WordFacts(lexicon), {s.constraint_index: s for s in solution.slots}
    )
    allowed = set(solution.allowed_words)
    outside = [w for w in distinct if w not in allowed]
    verdicts = [
        Verdict(
            None,
            "vocabulary",
            not outside and bool(words),
            "every word is in the allowed vocabulary"
            if not outside
            else f"words outside the vocabulary: {', '.join(outside)}",
            details={"n_words": len(words), "outside": outside},
        )
    ]
    verdicts += [_CHECKS[c.type](ans, i, c) for i, c in enumerate(solution.constraints)]
    return verdicts


def soft_total(verdicts: Iterable[Verdict]) -> float:
    """Sum over soft verdicts of their score (weight × fraction of words within range)."""
    return float(sum(v.details.get("score", 0.0) for v in verdicts if v.soft))


def soft_score(text: str, solution: Solution, lexicon: Lexicon) -> float:
    """Sum over soft constraints of weight × fraction of the answer's words within range."""
    if not solution.soft:
        return 0.0
    return soft_total(check_text(text, solution, lexicon))
