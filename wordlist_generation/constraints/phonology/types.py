"""The phonological constraint models: validated, normalized, frozen and hashable.

One pydantic model per constraint `type`, as a discriminated union, so an unknown type, an unknown
phoneme or an inconsistent range fails with a message that names the field. Models are frozen and
their sequences are tuples (JSON lists are accepted), so a validated request is a hashable value:
`PhonologicalSpec` holds them and the compiler's cache compares them by value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ...errors import InvalidConstraint
from .phonemes import (
    CONSONANT_FEATURES,
    CONSONANTS,
    INVENTORY,
    VOWELS,
    expand_exclusion,
    feature_difference,
    normalize_phoneme,
)


def _phoneme(value: str) -> str:
    return normalize_phoneme(value)  # raises UnknownPhonemeError (a ValueError) naming it


Phoneme = Annotated[str, AfterValidator(_phoneme)]
Position = Literal["initial", "medial", "final", "any"]
Norm = Literal["zipf", "syllables", "phonemes", "letters"]


def dedupe(values: Iterable[str]) -> tuple[str, ...]:
    """`values` without repeats, in first-seen order."""
    return tuple(dict.fromkeys(values))


class _ConstraintModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def label(self) -> str:
        """Short human description used in messages and reports."""
        return self.type  # type: ignore[attr-defined]


def _distinct_pair(p1: str, p2: str) -> None:
    if p1 == p2:
        raise ValueError(f"phoneme1 and phoneme2 are both /{p1}/; a contrast needs two sounds")


class ExcludeConstraint(_ConstraintModel):
    """Hard: no word of the answer contains any of these phonemes, in any pronunciation."""

    type: Literal["exclude"]
    phonemes: tuple[Phoneme, ...] = Field(min_length=1, max_length=len(INVENTORY))

    @model_validator(mode="after")
    def _unique(self) -> ExcludeConstraint:
        object.__setattr__(self, "phonemes", dedupe(self.phonemes))
        return self

    @property
    def effective_phonemes(self) -> tuple[str, ...]:
        """The requested phonemes plus those they imply (/ɹ/ implies /ɝ ɚ/)."""
        extra = sorted(expand_exclusion(self.phonemes) - set(self.phonemes))
        return (*self.phonemes, *extra)

    def label(self) -> str:
        return f"exclude /{' '.join(self.effective_phonemes)}/"


class IncludeConstraint(_ConstraintModel):
    """Hard: at least `min_count` distinct words have one of `phonemes` at `position`."""

    type: Literal["include"]
    phonemes: tuple[Phoneme, ...] = Field(min_length=1, max_length=len(INVENTORY))
    position: Position = "any"
    min_count: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _unique(self) -> IncludeConstraint:
        object.__setattr__(self, "phonemes", dedupe(self.phonemes))
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
        _distinct_pair(self.phoneme1, self.phoneme2)
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
        _distinct_pair(self.phoneme1, self.phoneme2)
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
    targets: tuple[Phoneme, ...] = Field(min_length=1, max_length=8)
    n_targets: int | None = Field(None, ge=1, le=8)
    position: Position = "any"

    @model_validator(mode="after")
    def _consistent(self) -> MultipleOppositionConstraint:
        targets = dedupe(self.targets)
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
ConstraintList = TypeAdapter(tuple[Constraint, ...])

UNARY_TYPES = ("exclude", "bound")
PAIR_TYPES = ("contrastive_minpair", "contrastive_maxopp")
CONTRAST_TYPES = (*PAIR_TYPES, "contrastive_multopp")


def _param_from_loc(loc: tuple[Any, ...], prefix: str) -> str:
    """(1, 'exclude', 'phonemes', 0) -> 'constraints.1.phonemes.0' (the union tag dropped)."""
    parts = [prefix]
    for i, part in enumerate(loc):
        if i == 1 and isinstance(part, str) and isinstance(loc[0], int):
            continue  # the discriminator tag pydantic inserts
        parts.append(str(part))
    return ".".join(parts)


def parse_constraints(data: Any, prefix: str = "constraints") -> tuple[Any, ...]:
    """Validate a raw `constraints` list into frozen constraint models.

    Raises `errors.InvalidConstraint` naming the first faulty field, e.g. `constraints.1.phonemes.0`
    (`prefix` is the request path of the list).
    """
    if not isinstance(data, list | tuple) or not data:
        raise InvalidConstraint("constraints must be a non-empty list", param=prefix)
    try:
        return ConstraintList.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            raise InvalidConstraint(
                str(err.get("msg")).replace("Input tag", "unknown constraint type"),
                param=f"{prefix}.{loc[0]}.type" if loc else f"{prefix}.type",
            ) from exc
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        param = _param_from_loc(loc, prefix)
        raise InvalidConstraint(f"Invalid value for '{param}': {msg}", param=param) from exc


def inventory_description() -> dict[str, list[str]]:
    """The inventory split into vowels and consonants (for error bodies and docs)."""
    return {"vowels": sorted(VOWELS), "consonants": sorted(CONSONANTS)}
