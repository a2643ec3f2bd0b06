"""Phonological constraints: validate, solve against the lexicon, compile to a grammar, re-check.

The pipeline, and why each step exists:

1. **Validate** (`parse_constraints`): pydantic models, one per constraint `type`, as a
   discriminated union, so an unknown type, an unknown phoneme or an inconsistent range fails
   with a message that names the field.
2. **Solve** (`solve`): the request is a small constraint-satisfaction problem over the lexicon.
   Unary constraints (`exclude`, `bound`) are filters: their conjunction is the *allowed
   vocabulary*. Positive constraints (`include`, the three contrastive types) are *required
   slots* whose domains are filtered the same way (a required word must itself be allowed). Pair
   and set relations are joins over `Lexicon.positions`: two words form a minimal pair exactly when
   their pronunciations are equal with the contrast position masked, so grouping on that masked
   frame finds all pairs at once. Solutions are ranked by word frequency (the rarest word of a
   pair decides: a pair is only as usable as its least familiar word) and the best K kept. When a
   domain empties we say which constraint emptied it and show the sizes before and after.
3. **Compile** (`GrammarPlan`, `compile_grammar`): a llguidance Lark grammar. Free words are the
   allowed vocabulary; "the answer contains these words, in any order" is not a regular-language
   blow-up here because llguidance rules can carry a 64-bit parameter: every required word (and
   every group of an `include` target set) owns a bit, a word sets its bits when it is written,
   and the end of the answer is only reachable once the bit condition holds. Words are lexemes
   grouped by the set of bits they set, so no string belongs to two lexemes.
4. **Decode** (`PhonologicalConstraint`): the engine's `CompiledConstraint`; its sequence states
   wrap an `LLMatcher`. When told the remaining token budget it steers toward the missing
   required words once the budget only just fits them.
5. **Re-check** (`check_text`): the final text is re-tokenized into words independently of the
   grammar and every word is looked up in CMUdict directly, so a bug in the frame or the grammar
   cannot certify its own output.

This module never imports a web framework: errors are typed exceptions the HTTP layer maps.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from wordlist_generation.constraints.base import CheckReport, CompiledConstraint, SequenceConstraint
from wordlist_generation.constraints.lexicon import (
    CONSONANT_FEATURES,
    CONSONANTS,
    INVENTORY,
    VOWELS,
    Lexicon,
    expand_exclusion,
    feature_difference,
    normalize_phoneme,
    phoneme_mask,
    pron_to_ipa,
)

#: Bump when the grammar layout changes (part of the compiled-constraint cache key).
GRAMMAR_VERSION = 1
#: Pair/set solutions kept per contrastive constraint (and offered to the grammar as alternatives).
DEFAULT_TOP_K = 5
#: Survival thresholds (allowed / base vocabulary).
SURVIVAL_WARNING = 0.20
SURVIVAL_STRONG_WARNING = 0.05
#: Bits available in one llguidance rule parameter.
MAX_GRAMMAR_BITS = 64
#: Most frequent words of each include group offered to the budget steering.
STEERING_WORDS_PER_GROUP = 20

#: What counts as a word in an answer (same alphabet as the lexicon, any case).
ANSWER_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
#: Bounded separators: closing punctuation, one space / newline / blank line, optional opening
#: punctuation; or a bare hyphen ("well-known"). Bounded so decoding cannot drift into filler.
SEP_REGEX = r"""/[.,;:!?")]{0,3}(?: |\n|\n\n)(?:- )?['"(]?|-/"""
LEAD_REGEX = r"""/['"(]/"""
END_REGEX = r"""/[.,;:!?")]{1,3}/"""

# --------------------------------------------------------------------------------------------
# Request models
# --------------------------------------------------------------------------------------------


def _phoneme(value: str) -> str:
    return normalize_phoneme(value)  # raises UnknownPhonemeError (a ValueError) naming it


Phoneme = Annotated[str, AfterValidator(_phoneme)]
Position = Literal["initial", "medial", "final", "any"]
Norm = Literal["zipf", "syllables", "phonemes", "letters"]


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


class _ConstraintModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def label(self) -> str:
        """Short human description used in messages and reports."""
        return self.type  # type: ignore[attr-defined]


class ExcludeConstraint(_ConstraintModel):
    """Hard: no word of the answer contains any of these phonemes, in any pronunciation."""

    type: Literal["exclude"]
    phonemes: list[Phoneme] = Field(min_length=1, max_length=len(INVENTORY))

    @model_validator(mode="after")
    def _unique(self) -> ExcludeConstraint:
        object.__setattr__(self, "phonemes", _dedupe(self.phonemes))
        return self

    @property
    def effective_phonemes(self) -> list[str]:
        """The requested phonemes plus those they imply (/ɹ/ implies /ɝ ɚ/)."""
        extra = sorted(expand_exclusion(self.phonemes) - set(self.phonemes))
        return list(self.phonemes) + extra

    def label(self) -> str:
        return f"exclude /{' '.join(self.effective_phonemes)}/"


class IncludeConstraint(_ConstraintModel):
    """Hard: at least `min_count` distinct words have one of `phonemes` at `position`."""

    type: Literal["include"]
    phonemes: list[Phoneme] = Field(min_length=1, max_length=len(INVENTORY))
    position: Position = "any"
    min_count: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _unique(self) -> IncludeConstraint:
        object.__setattr__(self, "phonemes", _dedupe(self.phonemes))
        return self

    def label(self) -> str:
        return f"include {self.min_count}× /{' '.join(self.phonemes)}/ {self.position}"


class _BoundFields(_ConstraintModel):
    norm: Norm
    min_value: float | None = None
    max_value: float | None = None

    @model_validator(mode="after")
    def _range(self) -> _BoundFields:
        if self.min_value is None and self.max_value is None:
            raise ValueError("give min_value, max_value or both")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(f"min_value ({self.min_value}) is above max_value ({self.max_value})")
        for v in (self.min_value, self.max_value):
            if v is not None and (v < 0 or not math.isfinite(v)):
                raise ValueError(f"bounds must be finite and non-negative, got {v}")
        return self

    def in_range(self, values: np.ndarray) -> np.ndarray:
        ok = np.ones(values.shape, dtype=bool)
        if self.min_value is not None:
            ok &= values >= self.min_value
        if self.max_value is not None:
            ok &= values <= self.max_value
        return ok

    def value_in_range(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.min_value is not None and value < self.min_value:
            return False
        return not (self.max_value is not None and value > self.max_value)

    def label(self) -> str:
        lo = "" if self.min_value is None else f"{self.min_value:g} ≤ "
        hi = "" if self.max_value is None else f" ≤ {self.max_value:g}"
        return f"{self.type} {lo}{self.norm}{hi}"  # type: ignore[attr-defined]


class BoundConstraint(_BoundFields):
    """Hard: every word has `norm` within [min_value, max_value]."""

    type: Literal["bound"]


class BoundBoostConstraint(_BoundFields):
    """Soft: prefer answers whose words have `norm` within the range (picks among drafts)."""

    type: Literal["bound_boost"]
    weight: float = Field(1.0, gt=0, le=100)


class MinimalPairConstraint(_ConstraintModel):
    """Hard: the answer contains a minimal pair contrasting `phoneme1` and `phoneme2`."""

    type: Literal["contrastive_minpair"]
    phoneme1: Phoneme
    phoneme2: Phoneme
    position: Position = "any"

    @model_validator(mode="after")
    def _distinct(self) -> MinimalPairConstraint:
        if self.phoneme1 == self.phoneme2:
            raise ValueError(
                f"phoneme1 and phoneme2 are both /{self.phoneme1}/; a contrast needs two sounds"
            )
        return self

    def label(self) -> str:
        return f"{self.type} /{self.phoneme1}/~/{self.phoneme2}/ {self.position}"


class MaximalOppositionConstraint(_ConstraintModel):
    """Hard: a minimal pair whose two consonants form a maximal opposition.

    Both sounds must be consonants, differ in the major class feature [sonorant] when
    `min_sonorant_diff` is 1, and differ in at least `min_feature_distance` of place, manner and
    voice (default 2: "many" features; a one-feature contrast is a minimal opposition).
    """

    type: Literal["contrastive_maxopp"]
    phoneme1: Phoneme
    phoneme2: Phoneme
    position: Position = "any"
    min_sonorant_diff: int = Field(1, ge=0, le=1)
    min_feature_distance: int = Field(2, ge=0, le=3)

    @model_validator(mode="after")
    def _maximal(self) -> MaximalOppositionConstraint:
        if self.phoneme1 == self.phoneme2:
            raise ValueError(
                f"phoneme1 and phoneme2 are both /{self.phoneme1}/; a contrast needs two sounds"
            )
        for p in (self.phoneme1, self.phoneme2):
            if p not in CONSONANT_FEATURES:
                raise ValueError(
                    f"/{p}/ is not a consonant; maximal oppositions contrast two consonants "
                    f"({' '.join(sorted(CONSONANTS))})"
                )
        diff = self.features
        if diff["sonorant_diff"] < self.min_sonorant_diff:
            raise ValueError(
                f"/{self.phoneme1}/ and /{self.phoneme2}/ are both "
                f"{'sonorants' if CONSONANT_FEATURES[self.phoneme1].sonorant else 'obstruents'} "
                f"(sonorant_diff 0 < min_sonorant_diff {self.min_sonorant_diff})"
            )
        if diff["feature_distance"] < self.min_feature_distance:
            raise ValueError(
                f"/{self.phoneme1}/ and /{self.phoneme2}/ differ in {diff['feature_distance']} of "
                f"place/manner/voice (place {diff['place']}, manner {diff['manner']}, voice "
                f"{diff['voice']}); min_feature_distance is {self.min_feature_distance}"
            )
        return self

    @property
    def features(self) -> dict[str, int]:
        return feature_difference(self.phoneme1, self.phoneme2)

    def label(self) -> str:
        return f"{self.type} /{self.phoneme1}/~/{self.phoneme2}/ {self.position}"


class MultipleOppositionConstraint(_ConstraintModel):
    """Hard: a minimal set: one word with `substitute`, `n_targets` words with distinct targets."""

    type: Literal["contrastive_multopp"]
    substitute: Phoneme
    targets: list[Phoneme] = Field(min_length=1, max_length=8)
    n_targets: int | None = Field(None, ge=1, le=8)
    position: Position = "any"

    @model_validator(mode="after")
    def _consistent(self) -> MultipleOppositionConstraint:
        targets = _dedupe(self.targets)
        if self.substitute in targets:
            raise ValueError(f"the substitute /{self.substitute}/ is also listed among the targets")
        n = len(targets) if self.n_targets is None else self.n_targets
        if n > len(targets):
            raise ValueError(
                f"n_targets ({n}) is above the number of distinct targets ({len(targets)})"
            )
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "n_targets", n)
        return self

    def label(self) -> str:
        return (
            f"{self.type} /{self.substitute}/ vs {self.n_targets} of "
            f"/{' '.join(self.targets)}/ {self.position}"
        )


Constraint = Annotated[
    ExcludeConstraint
    | IncludeConstraint
    | BoundConstraint
    | BoundBoostConstraint
    | MinimalPairConstraint
    | MaximalOppositionConstraint
    | MultipleOppositionConstraint,
    Field(discriminator="type"),
]
ConstraintList = TypeAdapter(list[Constraint])

UNARY_TYPES = ("exclude", "bound")
CONTRAST_TYPES = ("contrastive_minpair", "contrastive_maxopp", "contrastive_multopp")


def parse_constraints(data: Any) -> list[Any]:
    """Validate a raw `constraints` list (raises pydantic.ValidationError)."""
    return ConstraintList.validate_python(data)


def inventory_description() -> dict[str, list[str]]:
    """The inventory split into vowels and consonants (for error bodies and docs)."""
    return {"vowels": sorted(VOWELS), "consonants": sorted(CONSONANTS)}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class PhonologyError(Exception):
    """Base of every phonological-mode failure the HTTP layer turns into a 4xx."""


class UnsatisfiableConstraint(PhonologyError):
    """A domain emptied: `constraint_index` is the constraint whose domain (or whose filter) is
    at fault, `domain_sizes` the sizes along the way; `report` is a preview-style partial report."""

    def __init__(
        self,
        constraint_index: int | None,
        message: str,
        domain_sizes: dict[str, int],
        report: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.constraint_index = constraint_index
        self.message = message
        self.domain_sizes = domain_sizes
        self.report = report or {}

    def to_json(self) -> dict[str, Any]:
        return {
            "constraint_index": self.constraint_index,
            "message": self.message,
            "domain_sizes": self.domain_sizes,
        }


class GrammarTooLarge(PhonologyError):
    """The required words need more than 64 grammar bits (too many slots / min_count)."""


class UnsupportedBackend(PhonologyError):
    """The configured constraint backend cannot compile phonological grammars."""

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"phonological constraints need the llguidance backend (CONSTRAINT_BACKEND=llguidance); "
            f"the configured backend {backend!r} (lm-format-enforcer) cannot compile grammars with "
            f"required words in time"
        )
        self.backend = backend


class BudgetTooSmall(PhonologyError):
    """`max_tokens` can never fit the required words."""

    def __init__(self, max_tokens: int, needed: int, words: Sequence[str]) -> None:
        super().__init__(
            f"max_tokens={max_tokens} can never fit the required words ({', '.join(words)}): "
            f"they need at least {needed} tokens"
        )
        self.max_tokens = max_tokens
        self.needed = needed
        self.words = list(words)


def require_llguidance(backend: str) -> None:
    """Raise `UnsupportedBackend` unless `backend` is llguidance."""
    if backend != "llguidance":
        raise UnsupportedBackend(backend)


# --------------------------------------------------------------------------------------------
# Solving
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One pair or set solution: words in contrast order (phoneme1 then phoneme2; or the
    substitute word then the target words)."""

    words: tuple[str, ...]
    phonemes: tuple[str, ...]
    prons: tuple[tuple[str, ...], ...]
    zipf: tuple[float, ...]
    #: Per word, every allowed spelling of its pronunciation (the word first): "mat" counts
    #: as much as "matt" for a /m/~/s/ contrast, so the grammar accepts either.
    spellings: tuple[tuple[str, ...], ...] = ()

    @property
    def score(self) -> float:
        return min(self.zipf)

    def to_json(self) -> dict[str, Any]:
        return {
            "words": list(self.words),
            "phonemes": list(self.phonemes),
            "prons": [" ".join(p) for p in self.prons],
            "zipf": [round(z, 2) for z in self.zipf],
            "score": round(self.score, 2),
            "homophones": [list(sp[1:]) for sp in self.spellings],
        }


@dataclass(frozen=True)
class RequiredSlot:
    """A positive constraint after solving."""

    constraint_index: int
    constraint: Any
    domain_sizes: dict[str, int]
    trace: tuple[dict[str, Any], ...]
    n_solutions: int
    candidates: tuple[Candidate, ...] = ()
    #: include: the allowed words of the target set, most frequent first.
    target_words: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "include" if self.constraint.type == "include" else "relation"

    @property
    def chosen(self) -> tuple[str, ...]:
        """The words we suggest to the model (best candidate, or the top include words)."""
        if self.kind == "include":
            return self.target_words[: self.constraint.min_count]
        return self.candidates[0].words if self.candidates else ()

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        c = self.constraint
        out: dict[str, Any] = {
            "constraint_index": self.constraint_index,
            "type": c.type,
            "label": c.label(),
            "domain_sizes": self.domain_sizes,
            "trace": list(self.trace),
            "n_solutions": self.n_solutions,
            "chosen": list(self.chosen),
        }
        if self.kind == "include":
            out["examples"] = list(self.target_words[: top or 10])
        else:
            out["candidates"] = [cand.to_json() for cand in self.candidates[:top]]
        if c.type == "contrastive_maxopp":
            out["feature_difference"] = c.features
        return out


@dataclass(frozen=True)
class Solution:
    """The solved request: allowed vocabulary, required slots, soft constraints."""

    constraints: tuple[Any, ...]
    vocab_n_words: int | None
    top_k: int
    lexicon_size: int
    base_size: int
    allowed: np.ndarray  # bool per lexicon rank
    allowed_words: tuple[str, ...]  # most frequent first
    slots: tuple[RequiredSlot, ...]
    soft: tuple[tuple[int, BoundBoostConstraint], ...]
    stages: tuple[dict[str, Any], ...]
    solve_seconds: float
    key: str

    @property
    def n_allowed(self) -> int:
        return len(self.allowed_words)

    @property
    def survival(self) -> float:
        return self.n_allowed / self.base_size if self.base_size else 0.0

    @property
    def warning(self) -> dict[str, str] | None:
        return survival_warning(self.survival, self.n_allowed, self.base_size)

    def required_words(self) -> list[str]:
        """The suggested words of every slot (deduplicated, in slot order)."""
        return _dedupe(w for s in self.slots for w in s.chosen)

    def vocabulary_json(self) -> dict[str, Any]:
        return {
            "allowed": self.n_allowed,
            "base": self.base_size,
            "lexicon_size": self.lexicon_size,
            "vocab_n_words": self.vocab_n_words,
            "survival": round(self.survival, 4),
            "warning": self.warning,
        }

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        return {
            "vocabulary": self.vocabulary_json(),
            "stages": list(self.stages),
            "required": [s.to_json(top) for s in self.slots],
            "soft_constraints": [
                {"constraint_index": i, "label": c.label(), "weight": c.weight}
                for i, c in self.soft
            ],
            "solve_ms": round(self.solve_seconds * 1000, 2),
        }


def survival_warning(survival: float, allowed: int, base: int) -> dict[str, str] | None:
    """None above 20 %; a warning under 20 %; a strong warning under 5 %."""
    pct = f"{100 * survival:.1f} %"
    if survival < SURVIVAL_STRONG_WARNING:
        return {
            "level": "strong",
            "message": f"only {allowed} of {base} words ({pct}) survive the constraints; answers will be stilted",
        }
    if survival < SURVIVAL_WARNING:
        return {
            "level": "warning",
            "message": f"{allowed} of {base} words ({pct}) survive the constraints; answers may be awkward",
        }
    return None


def cache_key(
    lexicon: Lexicon,
    constraints: Sequence[Any],
    vocab_n_words: int | None,
    top_k: int = DEFAULT_TOP_K,
) -> str:
    """A stable key for the solved-and-compiled request (everything that shapes the grammar)."""
    payload = {
        "grammar": GRAMMAR_VERSION,
        "lexicon": lexicon.fingerprint,
        "constraints": [c.model_dump(mode="json") for c in constraints],
        "vocab_n_words": vocab_n_words,
        "top_k": top_k,
    }
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _unary_mask(lexicon: Lexicon, c: Any) -> np.ndarray:
    a = lexicon.arrays
    if c.type == "exclude":
        m = np.uint64(phoneme_mask(expand_exclusion(c.phonemes)))
        return (a.any_mask & m) == 0
    values = {
        "zipf": a.zipf,
        "syllables": a.n_syllables,
        "phonemes": a.n_phonemes,
        "letters": a.n_letters,
    }[c.norm]
    return c.in_range(values)


def _include_domain(lexicon: Lexicon, c: IncludeConstraint) -> np.ndarray:
    a = lexicon.arrays
    bits = [INVENTORY.index(p) for p in c.phonemes]
    m = np.uint64(phoneme_mask(c.phonemes))
    if c.position == "initial":
        return np.isin(a.first_bit, bits)
    if c.position == "final":
        return np.isin(a.last_bit, bits)
    if c.position == "medial":
        return (a.medial_mask & m) != 0
    return (a.pron_mask & m) != 0


def _position_expr(position: str) -> pl.Expr:
    idx, n = pl.col("idx").cast(pl.Int16), pl.col("n_phonemes").cast(pl.Int16)
    if position == "initial":
        return idx == 0
    if position == "final":
        return idx == n - 1
    if position == "medial":
        return (idx > 0) & (idx < n - 1)
    return pl.lit(True)


def _relation_rows(lexicon: Lexicon, phonemes: Sequence[str], position: str) -> pl.DataFrame:
    """Rows of `Lexicon.positions` with one of `phonemes` at `position`."""
    parts = [lexicon.positions_by_phoneme[p] for p in phonemes if p in lexicon.positions_by_phoneme]
    if not parts:
        return lexicon.positions.clear()
    return pl.concat(parts).filter(_position_expr(position))


def _best_per_frame(rows: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    """Allowed rows, one per (frame, phoneme): the most frequent spelling of a homophone."""
    ok = rows.filter(pl.Series(mask).gather(rows["rank"]))
    return ok.sort("rank").unique(["frame_key", "phon"], keep="first", maintain_order=True)


def _pairs(rows: pl.DataFrame, mask: np.ndarray, p1: str, p2: str) -> pl.DataFrame:
    """Minimal pairs (rank_a has p1, rank_b has p2) by a join on the masked frame."""
    best = _best_per_frame(rows, mask)
    a = best.filter(pl.col("phon") == p1).select("frame_key", rank_a="rank")
    b = best.filter(pl.col("phon") == p2).select("frame_key", rank_b="rank")
    pairs = a.join(b, on="frame_key", how="inner")
    return pairs.with_columns(
        worst=pl.max_horizontal("rank_a", "rank_b"), total=pl.col("rank_a") + pl.col("rank_b")
    ).sort(["worst", "total"])


def _sets(rows: pl.DataFrame, mask: np.ndarray, substitute: str, n_targets: int) -> pl.DataFrame:
    """Minimal sets: frames holding the substitute and >= n_targets distinct targets."""
    best = _best_per_frame(rows, mask)
    subs = best.filter(pl.col("phon") == substitute).select("frame_key", rank_s="rank")
    tg = best.filter(pl.col("phon") != substitute).select("frame_key", "phon", "rank")
    joined = tg.join(subs, on="frame_key", how="inner").sort("rank")
    groups = (
        joined.group_by("frame_key", maintain_order=True)
        .agg(
            pl.col("rank_s").first(),
            pl.col("rank").head(n_targets).alias("ranks"),
            pl.col("phon").head(n_targets).alias("phons"),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") >= n_targets)
    )
    return groups.with_columns(
        worst=pl.max_horizontal(pl.col("rank_s"), pl.col("ranks").list.max()),
        total=pl.col("rank_s") + pl.col("ranks").list.sum(),
    ).sort(["worst", "total"])


@dataclass
class _Stage:
    label: str
    constraint_index: int | None
    mask: np.ndarray


def _first_failure(trace: list[tuple[_Stage, int]], needed: int) -> tuple[_Stage, int, int] | None:
    """(stage, size before, size after) of the first stage where the size fell below `needed`."""
    before = None
    for stage, size in trace:
        if size < needed:
            return stage, (size if before is None else before), size
        before = size
    return None


def _trace_json(trace: list[tuple[_Stage, int]]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"stage": s.label, "constraint_index": s.constraint_index, "size": n} for s, n in trace
    )


def _raise_unsat(
    c_index: int,
    c: Any,
    what: str,
    trace: list[tuple[_Stage, int]],
    needed: int,
    extra_sizes: dict[str, int],
    report: dict[str, Any],
) -> None:
    fail = _first_failure(trace, needed)
    if fail is None:
        return
    stage, before, after = fail
    sizes = {s.label: n for s, n in trace} | extra_sizes
    if stage.constraint_index is None and stage.label == "lexicon":
        msg = f"constraint {c_index} ({c.label()}) cannot be satisfied: the lexicon has {after} {what}"
        if needed > 1:
            msg += f", {needed} needed"
        culprit = c_index
    else:
        msg = (
            f"{stage.label} emptied the domain of constraint {c_index} ({c.label()}): "
            f"{what} {before} → {after}" + (f" ({needed} needed)" if needed > 1 else "")
        )
        culprit = stage.constraint_index if stage.constraint_index is not None else c_index
    raise UnsatisfiableConstraint(culprit, msg, sizes, report)


def solve(
    lexicon: Lexicon,
    constraints: Sequence[Any],
    vocab_n_words: int | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> Solution:
    """Solve validated constraints against the lexicon (raises `UnsatisfiableConstraint`)."""
    t0 = time.perf_counter()
    constraints = tuple(constraints)
    a = lexicon.arrays
    n = lexicon.size
    mask = np.ones(n, dtype=bool)
    stages = [_Stage("lexicon", None, mask)]
    if vocab_n_words is not None:
        mask = np.arange(n) < vocab_n_words
        stages.append(_Stage(f"vocab_n_words={vocab_n_words}", None, mask))
    base_size = int(mask.sum())
    for i, c in enumerate(constraints):
        if c.type in UNARY_TYPES:
            mask = mask & _unary_mask(lexicon, c)
            stages.append(_Stage(f"constraint {i} ({c.label()})", i, mask))
    allowed = mask
    stage_sizes = [(s, int(s.mask.sum())) for s in stages]
    stages_json = _trace_json(stage_sizes)
    partial = {
        "vocabulary": {
            "allowed": int(allowed.sum()),
            "base": base_size,
            "lexicon_size": n,
            "vocab_n_words": vocab_n_words,
            "survival": round(int(allowed.sum()) / base_size, 4) if base_size else 0.0,
        },
        "stages": list(stages_json),
    }
    if not allowed.any():
        stage, before, _ = _first_failure(stage_sizes, 1)  # type: ignore[misc]
        raise UnsatisfiableConstraint(
            stage.constraint_index,
            f"{stage.label} leaves no allowed word ({before} → 0)",
            {s.label: k for s, k in stage_sizes},
            partial,
        )

    slots: list[RequiredSlot] = []
    for i, c in enumerate(constraints):
        if c.type == "include":
            dom = _include_domain(lexicon, c)
            trace = [(s, int((dom & s.mask).sum())) for s in stages]
            final = dom & allowed
            sizes = {"target_words": int(final.sum())}
            _raise_unsat(i, c, "target words", trace, c.min_count, sizes, partial)
            words = tuple(a.words[r] for r in np.flatnonzero(final))
            slots.append(RequiredSlot(i, c, sizes, _trace_json(trace), len(words), (), words))
        elif c.type in ("contrastive_minpair", "contrastive_maxopp"):
            rows = _relation_rows(lexicon, [c.phoneme1, c.phoneme2], c.position)
            d1 = np.zeros(n, dtype=bool)
            d2 = np.zeros(n, dtype=bool)
            r1 = rows.filter(pl.col("phon") == c.phoneme1)["rank"].to_numpy()
            r2 = rows.filter(pl.col("phon") == c.phoneme2)["rank"].to_numpy()
            d1[r1] = True
            d2[r2] = True
            trace = [(s, _pairs(rows, s.mask, c.phoneme1, c.phoneme2).height) for s in stages]
            pairs = _pairs(rows, allowed, c.phoneme1, c.phoneme2)
            sizes = {
                "phoneme1_words": int((d1 & allowed).sum()),
                "phoneme2_words": int((d2 & allowed).sum()),
                "pairs": pairs.height,
            }
            _raise_unsat(i, c, "minimal pairs", trace, 1, sizes, partial)
            cands = tuple(
                _candidate(lexicon, (ra, rb), (c.phoneme1, c.phoneme2), allowed)
                for ra, rb in pairs.head(top_k).select("rank_a", "rank_b").iter_rows()
            )
            slots.append(RequiredSlot(i, c, sizes, _trace_json(trace), pairs.height, cands))
        elif c.type == "contrastive_multopp":
            phons = [c.substitute, *c.targets]
            rows = _relation_rows(lexicon, phons, c.position)
            trace = [(s, _sets(rows, s.mask, c.substitute, c.n_targets).height) for s in stages]
            sets = _sets(rows, allowed, c.substitute, c.n_targets)
            counts = rows.filter(pl.Series(allowed).gather(rows["rank"])).group_by("phon").len()
            per_phon = dict(zip(counts["phon"].to_list(), counts["len"].to_list(), strict=True))
            sizes = {f"/{p}/_words": int(per_phon.get(p, 0)) for p in phons} | {"sets": sets.height}
            _raise_unsat(i, c, "minimal sets", trace, 1, sizes, partial)
            cands = tuple(
                _candidate(lexicon, (rs, *rk), (c.substitute, *ph), allowed)
                for rs, rk, ph in sets.head(top_k).select("rank_s", "ranks", "phons").iter_rows()
            )
            slots.append(RequiredSlot(i, c, sizes, _trace_json(trace), sets.height, cands))

    soft = tuple((i, c) for i, c in enumerate(constraints) if c.type == "bound_boost")
    idx = np.flatnonzero(allowed)
    allowed_words = tuple(a.words[r] for r in idx)
    return Solution(
        constraints=constraints,
        vocab_n_words=vocab_n_words,
        top_k=top_k,
        lexicon_size=n,
        base_size=base_size,
        allowed=allowed,
        allowed_words=allowed_words,
        slots=tuple(slots),
        soft=soft,
        stages=stages_json,
        solve_seconds=time.perf_counter() - t0,
        key=cache_key(lexicon, constraints, vocab_n_words, top_k),
    )


#: Spellings kept per pronunciation (homophones beyond this are rare and rarely useful).
MAX_SPELLINGS = 4


def _candidate(
    lexicon: Lexicon, ranks: Sequence[int], phonemes: Sequence[str], allowed: np.ndarray
) -> Candidate:
    f = lexicon.frame
    words = lexicon.arrays.words
    rows = [f.row(int(r), named=True) for r in ranks]
    spellings = tuple(
        tuple(words[h] for h in lexicon.homophones(int(r)) if allowed[h])[:MAX_SPELLINGS]
        for r in ranks
    )
    return Candidate(
        words=tuple(r["word"] for r in rows),
        phonemes=tuple(phonemes),
        prons=tuple(tuple(r["pron"]) for r in rows),
        zipf=tuple(float(r["zipf"]) for r in rows),
        spellings=spellings,
    )


def preview(
    lexicon: Lexicon,
    constraints: Sequence[Any],
    vocab_n_words: int | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Survival, domain sizes and the top candidates, without compiling (fast enough per edit).

    An unsatisfiable request is a normal preview result (`satisfiable: false` plus the reason),
    not an error: a UI calls this while the user is still editing.
    """
    t0 = time.perf_counter()
    try:
        sol = solve(lexicon, constraints, vocab_n_words, top_k)
    except UnsatisfiableConstraint as exc:
        out = {"satisfiable": False, "unsatisfiable": exc.to_json()} | exc.report
        vocab = out.get("vocabulary")
        if vocab:
            vocab["warning"] = survival_warning(vocab["survival"], vocab["allowed"], vocab["base"])
    else:
        out = {"satisfiable": True} | sol.to_json(top_k) | {"required_words": sol.required_words()}
    out["lexicon"] = lexicon.describe()
    out["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return out


# --------------------------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Independent re-check
# --------------------------------------------------------------------------------------------


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


def _present(slot: RequiredSlot | None, seen: set[str]) -> dict[str, bool]:
    """Which suggested words of `slot` the answer uses (a homophone spelling counts)."""
    if slot is None:
        return {}
    if slot.kind == "include" or not slot.candidates:
        return {w: w in seen for w in slot.chosen}
    best = slot.candidates[0]
    spellings = best.spellings or tuple((w,) for w in best.words)
    return {w: any(sp in seen for sp in sps) for w, sps in zip(best.words, spellings, strict=True)}


def check_text(text: str, solution: Solution, lexicon: Lexicon) -> list[Verdict]:
    """Re-check a final answer against every constraint, independently of grammar and frame."""
    words = answer_words(text)
    distinct = list(dict.fromkeys(words))
    facts = _WordFacts(lexicon)
    allowed = set(solution.allowed_words)
    verdicts: list[Verdict] = []

    outside = [w for w in distinct if w not in allowed]
    verdicts.append(
        Verdict(
            None,
            "vocabulary",
            not outside and bool(words),
            "every word is in the allowed vocabulary"
            if not outside
            else f"words outside the vocabulary: {', '.join(outside)}",
            details={"n_words": len(words), "outside": outside},
        )
    )
    slot_of = {s.constraint_index: s for s in solution.slots}
    seen = set(distinct)
    for i, c in enumerate(solution.constraints):
        present = _present(slot_of.get(i), seen)
        if c.type == "exclude":
            banned = expand_exclusion(c.phonemes)
            offending = {}
            for w in distinct:
                prons, _ = facts.get(w)
                if not prons:
                    offending[w] = "no pronunciation in CMUdict"
                    continue
                hit = sorted({p for pr in prons for p in pr if p in banned})
                if hit:
                    offending[w] = " ".join(hit)
            verdicts.append(
                Verdict(
                    i,
                    c.type,
                    not offending,
                    "no excluded sound"
                    if not offending
                    else f"{len(offending)} word(s) contain excluded sounds",
                    details={"offending": offending, "excluded": sorted(banned)},
                )
            )
        elif c.type in ("bound", "bound_boost"):
            values = {w: facts.norm(w, c.norm) for w in distinct}
            out_of_range = {w: v for w, v in values.items() if not c.value_in_range(v)}
            inside = sum(1 for w in words if c.value_in_range(values[w]))
            frac = inside / len(words) if words else 0.0
            soft = c.type == "bound_boost"
            details: dict[str, Any] = {
                "out_of_range": out_of_range,
                "fraction_in_range": round(frac, 4),
            }
            if soft:
                details["score"] = round(c.weight * frac, 4)
            verdicts.append(
                Verdict(
                    i,
                    c.type,
                    soft or not out_of_range,
                    f"{inside}/{len(words)} words within {c.label()}",
                    soft=soft,
                    details=details,
                )
            )
        elif c.type == "include":
            phons = set(c.phonemes)
            hits = []
            for w in distinct:
                prons, _ = facts.get(w)
                if prons and any(
                    p in phons and _at_position(prons[0], k, c.position)
                    for k, p in enumerate(prons[0])
                ):
                    hits.append(w)
            ok = len(hits) >= c.min_count
            verdicts.append(
                Verdict(
                    i,
                    c.type,
                    ok,
                    f"{len(hits)} of {c.min_count} required words with /{' '.join(c.phonemes)}/ {c.position}",
                    details={
                        "words": hits,
                        "needed": c.min_count,
                        "missing": max(0, c.min_count - len(hits)),
                        "suggested": present,
                    },
                )
            )
        elif c.type in ("contrastive_minpair", "contrastive_maxopp"):
            frames = _frames(distinct, facts, {c.phoneme1, c.phoneme2}, c.position)
            found = [
                [d[c.phoneme1], d[c.phoneme2]]
                for d in frames.values()
                if c.phoneme1 in d and c.phoneme2 in d
            ]
            details = {
                "pairs_found": found,
                "required_words": present,
                "missing": [w for w, ok in present.items() if not ok],
            }
            if c.type == "contrastive_maxopp":
                details["feature_difference"] = c.features
            verdicts.append(
                Verdict(
                    i,
                    c.type,
                    bool(found),
                    f"minimal pair found: {found[0][0]}/{found[0][1]}"
                    if found
                    else f"no minimal pair /{c.phoneme1}/~/{c.phoneme2}/ {c.position} in the answer",
                    details=details,
                )
            )
        elif c.type == "contrastive_multopp":
            frames = _frames(distinct, facts, {c.substitute, *c.targets}, c.position)
            found = []
            for d in frames.values():
                tg = [p for p in c.targets if p in d]
                if c.substitute in d and len(tg) >= c.n_targets:
                    found.append([d[c.substitute]] + [d[p] for p in tg])
            verdicts.append(
                Verdict(
                    i,
                    c.type,
                    bool(found),
                    f"minimal set found: {'/'.join(found[0])}"
                    if found
                    else f"no minimal set /{c.substitute}/ vs {c.n_targets} of /{' '.join(c.targets)}/ in the answer",
                    details={
                        "sets_found": found,
                        "required_words": present,
                        "missing": [w for w, ok in present.items() if not ok],
                    },
                )
            )
    return verdicts


def soft_score(text: str, solution: Solution, lexicon: Lexicon) -> float:
    """Sum over soft constraints of weight × fraction of the answer's words within range."""
    if not solution.soft:
        return 0.0
    verdicts = check_text(text, solution, lexicon)
    return float(sum(v.details.get("score", 0.0) for v in verdicts if v.soft))


# --------------------------------------------------------------------------------------------
# The compiled constraint (engine interface)
# --------------------------------------------------------------------------------------------


class _Bitmask:
    """Converts llguidance's packed bitmask into the engine's bool vector.

    Plain numpy on purpose: `llguidance.torch` compiles a kernel with `torch.compile` at import
    (about a second), and tiny torch ops pay thread-pool overhead on a busy CPU.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.packed = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def fill(self, matcher: Any, allowed: torch.Tensor) -> None:
        matcher.unsafe_compute_mask_ptr(self.packed.ctypes.data, self.packed.nbytes)
        bits = np.unpackbits(self.packed.view(np.uint8), bitorder="little")
        n = min(allowed.shape[0], self.vocab_size)
        allowed[:n] |= torch.from_numpy(bits[:n].view(np.bool_))


class PhonologicalSequence(SequenceConstraint):
    """Decoding state: an `LLMatcher` plus optional budget steering.

    The decoding loop may call `set_remaining_tokens(n)` before `fill_allowed`; when the
    remaining budget only just fits the missing required words, the mask is narrowed to the
    canonical tokens of those words (still intersected with the grammar, so compliance is kept).
    """

    def __init__(self, owner: PhonologicalConstraint, matcher: Any) -> None:
        self._owner = owner
        self._matcher = matcher
        self._tokens: list[int] = []
        self._remaining: int | None = None
        self._steer_prefix: list[int] = []
        self._steer_seqs: list[tuple[int, ...]] | None = None
        self._bitmask: _Bitmask | None = None

    def fork(self) -> PhonologicalSequence:
        other = PhonologicalSequence(self._owner, self._matcher.deep_copy())
        other._tokens = list(self._tokens)
        other._remaining = self._remaining
        other._steer_prefix = list(self._steer_prefix)
        other._steer_seqs = self._steer_seqs  # never mutated, only replaced
        return other

    def advance(self, token_id: int) -> bool:
        ok = bool(self._matcher.consume_token(token_id))
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

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        if self._remaining == 1 and self.can_end():
            # The last token of the budget: a complete, compliant answer ends here (the caller
            # allows EOS) rather than starting a word that max_tokens would cut and trim away,
            # possibly taking a required word with it ("so" -> "sof").
            return
        if self._bitmask is None:
            self._bitmask = _Bitmask(self._owner.ll_tokenizer.vocab_size)
        self._bitmask.fill(self._matcher, allowed)
        steer = self._steering_tokens()
        if steer:
            narrowed = torch.zeros_like(allowed)
            idx = torch.tensor([t for t in steer if t < allowed.shape[0]], dtype=torch.long)
            if idx.numel():
                narrowed[idx] = allowed[idx]
            if narrowed.any():
                allowed.copy_(narrowed)

    def _steering_tokens(self) -> set[int]:
        if self._remaining is None or self._remaining > self._owner.steer_horizon:
            return set()  # far from the end of the budget: no need to look at the text
        text = self.text()
        needed, _ = self._owner.tokens_needed(text)
        if needed == 0 or self._remaining > needed + self._owner.steer_slack:
            return set()
        seqs = self._owner.steering_sequences(text)
        k = len(self._steer_prefix)
        prefix = tuple(self._steer_prefix)
        self._steer_seqs = [s for s in seqs if len(s) > k and s[:k] == prefix]
        return {s[k] for s in self._steer_seqs}

    def can_end(self) -> bool:
        return bool(self._matcher.is_accepting())

    @property
    def error(self) -> str:
        return self._matcher.get_error()


def parser_limits() -> Any:
    """llguidance limits sized for a whole-lexicon grammar.

    The default lexer fuel (1e6) is exhausted by tens of thousands of word alternatives in one
    lexeme class; the matcher then enters an error state that only allows EOS. These limits are
    what a 45,000-word lexicon with a few required-word classes needs, with headroom.
    """
    import llguidance

    return llguidance.LLParserLimits(
        initial_lexer_fuel=50_000_000,
        step_lexer_fuel=10_000_000,
        max_lexer_states=2_000_000,
        max_grammar_size=5_000_000,
    )


class PhonologicalConstraint(CompiledConstraint):
    """A solved phonological request compiled for one tokenizer (immutable, cacheable)."""

    def __init__(
        self,
        solution: Solution,
        lexicon: Lexicon,
        tokenizer: Any,
        ll_tokenizer: Any | None = None,
        *,
        max_alternatives: int | None = None,
        steer_slack: int = 1,
    ) -> None:
        import llguidance
        import llguidance.hf

        t0 = time.perf_counter()
        self.solution = solution
        self.lexicon = lexicon
        self.tokenizer = tokenizer
        self.ll_tokenizer = (
            ll_tokenizer if ll_tokenizer is not None else llguidance.hf.from_tokenizer(tokenizer)
        )
        self.plan = GrammarPlan.build(solution, max_alternatives)
        self.grammar = self.plan.lark()
        self.steer_slack = steer_slack
        matcher = llguidance.LLMatcher(
            self.ll_tokenizer,
            llguidance.LLMatcher.grammar_from_lark(self.grammar),
            log_level=0,
            limits=parser_limits(),
        )
        if matcher.is_error():
            raise PhonologyError(f"grammar did not compile: {matcher.get_error()}")
        self._matcher = matcher
        self._allowed = frozenset(solution.allowed_words)
        self._variants = self._tokenize_required_words()
        self._min_tokens = self._plan(0)[0]
        #: Steering can only start once the remaining budget is at most this.
        self.steer_horizon = self._min_tokens + steer_slack if self.plan.requirements else -1
        self.compile_seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------- token costs
    def _tokenize_required_words(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        words: list[str] = []
        for r in self.plan.requirements:
            words.extend(w for alt in r.alternatives for w in alt)
            for g in r.groups:
                words.extend(g[:STEERING_WORDS_PER_GROUP])
        words = _dedupe(words)
        variants = [
            v
            for w in words
            for v in (f" {w}", f" {w[0].upper()}{w[1:]}", w, f"{w[0].upper()}{w[1:]}")
        ]
        if not variants:
            return {}
        enc = self.tokenizer(variants, add_special_tokens=False)["input_ids"]
        out: dict[str, tuple[tuple[int, ...], ...]] = {}
        for k, w in enumerate(words):
            out[w] = tuple(tuple(ids) for ids in enc[4 * k : 4 * k + 4])
        return out

    def _cost(self, word: str) -> int:
        return min(len(v) for v in self._variants[word])

    def _plan(self, bits: int) -> tuple[int, list[str]]:
        """Cheapest set of words (by token count) that completes the requirements from `bits`."""
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
            else:
                for b, g in zip(r.group_bits, r.groups, strict=True):
                    if not bits >> b & 1:
                        options.append(
                            [(w,) for w in sorted(g[:STEERING_WORDS_PER_GROUP], key=self._cost)[:3]]
                        )
        if not options:
            return 0, []
        combos: Iterable[tuple[tuple[str, ...], ...]]
        if math.prod(len(o) for o in options) <= 4096:
            combos = itertools.product(*options)
        else:
            combos = [
                tuple(min(o, key=lambda alt: sum(self._cost(w) for w in alt)) for o in options)
            ]
        best: tuple[int, list[str]] | None = None
        for combo in combos:
            words = _dedupe(w for alt in combo for w in alt)
            cost = sum(self._cost(w) for w in words)
            if best is None or cost < best[0]:
                best = (cost, words)
        assert best is not None
        return best

    def min_tokens_to_satisfy(self) -> int:
        """Fewest tokens any compliant answer needs (its required words; EOS not counted).

        A `max_tokens` below this can never produce a compliant answer: reject it up front.
        """
        return self._min_tokens

    def check_budget(self, max_tokens: int) -> None:
        """Raise `BudgetTooSmall` when `max_tokens` cannot fit the required words."""
        needed, words = self._plan(0)
        if max_tokens < needed:
            raise BudgetTooSmall(max_tokens, needed, words)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.ll_tokenizer.decode_str(list(tokens))

    def tokens_needed(self, text: str) -> tuple[int, list[str]]:
        """Tokens still needed for the missing required words, and those words.

        A trailing word counts as written even though it could still grow ("has" -> "hasn't"):
        if it does grow, the next call sees the longer word and plans for the loss again.
        """
        bits = self.plan.bits_of_words(answer_words(text))
        return self._plan(bits)

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

    # ---------------------------------------------------------------- CompiledConstraint
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
            present |= _present(slot, seen)
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
                "soft_score": round(
                    sum(v.details.get("score", 0.0) for v in verdicts if v.soft), 4
                ),
            },
        )

    def soft_score(self, text: str) -> float:
        """Weighted fraction of words within the soft ranges (0 when there are none)."""
        return soft_score(text, self.solution, self.lexicon)

    @property
    def has_soft_constraints(self) -> bool:
        return bool(self.solution.soft)

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
        out["compile_ms"] = round(self.compile_seconds * 1000, 2)
        out["cache_key"] = self.solution.key
        return out


def min_tokens_to_satisfy(constraint: PhonologicalConstraint) -> int:
    """Module-level alias of `PhonologicalConstraint.min_tokens_to_satisfy`."""
    return constraint.min_tokens_to_satisfy()
