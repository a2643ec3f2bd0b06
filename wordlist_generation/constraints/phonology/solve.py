"""Solve a phonological request against the lexicon: allowed vocabulary and required slots.

The request is a small constraint-satisfaction problem over the lexicon. Unary constraints
(`exclude`, `bound`) are filters: their conjunction is the *allowed vocabulary*. Positive
constraints (`include`, the three contrastive types) are *required slots* whose domains are
filtered the same way (a required word must itself be allowed). Pair and set relations are joins
over `Lexicon.positions`: two words form a minimal pair exactly when their pronunciations are equal
with the contrast position masked, so grouping on that masked frame finds all pairs at once.
Solutions are ranked by word frequency (the rarest word of a pair decides: a pair is only as usable
as its least familiar word) and the best K kept. When a domain empties we say which constraint
emptied it and show the sizes before and after.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from .errors import UnsatisfiableConstraint
from .lexicon import Lexicon
from .phonemes import INVENTORY, expand_exclusion, phoneme_mask
from .types import UNARY_TYPES, BoundBoostConstraint, IncludeConstraint, dedupe

#: Bump when the grammar layout changes (part of the compiled-constraint cache key).
GRAMMAR_VERSION = 3
#: Pair/set solutions kept per contrastive constraint (and offered to the grammar as alternatives).
DEFAULT_TOP_K = 5
#: Survival thresholds (allowed / base vocabulary).
SURVIVAL_WARNING = 0.20
SURVIVAL_STRONG_WARNING = 0.05
#: Spellings kept per pronunciation (homophones beyond this are rare and rarely useful).
MAX_SPELLINGS = 4


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
        """The words chosen before generating (the prompt hint names them), in slot order: each
        pair or set slot's best candidate, then for each include slot its most frequent target
        words, as many as the words already chosen do not bring (a pair "said/says" also gives
        two /s/-initial words)."""
        chosen = {s.constraint_index: s.chosen for s in self.slots if s.kind != "include"}
        taken = {w for ws in chosen.values() for w in ws}
        for s in self.slots:
            if s.kind == "include":
                targets = set(s.target_words)
                short = s.constraint.min_count - sum(w in targets for w in taken)
                fresh = (w for w in s.target_words if w not in taken)
                chosen[s.constraint_index] = tuple(itertools.islice(fresh, max(short, 0)))
                taken.update(chosen[s.constraint_index])
        return list(dedupe(w for s in self.slots for w in chosen[s.constraint_index]))

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


@dataclass(frozen=True)
class _Domains:
    """What every required slot is solved against: the filter stages and the allowed mask."""

    lexicon: Lexicon
    stages: tuple[_Stage, ...]
    allowed: np.ndarray
    top_k: int
    #: The preview-style report attached to an `UnsatisfiableConstraint`.
    partial: dict[str, Any]


def _include_slot(d: _Domains, i: int, c: Any) -> RequiredSlot:
    dom = _include_domain(d.lexicon, c)
    trace = [(s, int((dom & s.mask).sum())) for s in d.stages]
    final = dom & d.allowed
    sizes = {"target_words": int(final.sum())}
    _raise_unsat(i, c, "target words", trace, c.min_count, sizes, d.partial)
    words = tuple(d.lexicon.arrays.words[r] for r in np.flatnonzero(final))
    return RequiredSlot(i, c, sizes, _trace_json(trace), len(words), (), words)


def _pair_slot(d: _Domains, i: int, c: Any) -> RequiredSlot:
    rows = _relation_rows(d.lexicon, [c.phoneme1, c.phoneme2], c.position)
    trace = [(s, _pairs(rows, s.mask, c.phoneme1, c.phoneme2).height) for s in d.stages]
    pairs = _pairs(rows, d.allowed, c.phoneme1, c.phoneme2)
    sizes = {}
    for key, phon in (("phoneme1_words", c.phoneme1), ("phoneme2_words", c.phoneme2)):
        dom = np.zeros(d.lexicon.size, dtype=bool)
        dom[rows.filter(pl.col("phon") == phon)["rank"].to_numpy()] = True
        sizes[key] = int((dom & d.allowed).sum())
    sizes["pairs"] = pairs.height
    _raise_unsat(i, c, "minimal pairs", trace, 1, sizes, d.partial)
    cands = tuple(
        _candidate(d.lexicon, (ra, rb), (c.phoneme1, c.phoneme2), d.allowed)
        for ra, rb in pairs.head(d.top_k).select("rank_a", "rank_b").iter_rows()
    )
    return RequiredSlot(i, c, sizes, _trace_json(trace), pairs.height, cands)


def _set_slot(d: _Domains, i: int, c: Any) -> RequiredSlot:
    phons = [c.substitute, *c.targets]
    rows = _relation_rows(d.lexicon, phons, c.position)
    trace = [(s, _sets(rows, s.mask, c.substitute, c.n_targets).height) for s in d.stages]
    sets = _sets(rows, d.allowed, c.substitute, c.n_targets)
    counts = rows.filter(pl.Series(d.allowed).gather(rows["rank"])).group_by("phon").len()
    per_phon = dict(zip(counts["phon"].to_list(), counts["len"].to_list(), strict=True))
    sizes = {f"/{p}/_words": int(per_phon.get(p, 0)) for p in phons} | {"sets": sets.height}
    _raise_unsat(i, c, "minimal sets", trace, 1, sizes, d.partial)
    cands = tuple(
        _candidate(d.lexicon, (rs, *rk), (c.substitute, *ph), d.allowed)
        for rs, rk, ph in sets.head(d.top_k).select("rank_s", "ranks", "phons").iter_rows()
    )
    return RequiredSlot(i, c, sizes, _trace_json(trace), sets.height, cands)


#: How each positive constraint type becomes a required slot.
_SLOT_BUILDERS = {
    "include": _include_slot,
    "contrastive_minpair": _pair_slot,
    "contrastive_maxopp": _pair_slot,
    "contrastive_multopp": _set_slot,
}


def _filter_stages(
    lexicon: Lexicon, constraints: Sequence[Any], vocab_n_words: int | None
) -> tuple[list[_Stage], int]:
    """The lexicon, the `vocab_n_words` cut and each unary filter; and the base size."""
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
    return stages, base_size


def solve(
    lexicon: Lexicon,
    constraints: Sequence[Any],
    vocab_n_words: int | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> Solution:
    """Solve validated constraints against the lexicon (raises `UnsatisfiableConstraint`)."""
    t0 = time.perf_counter()
    constraints = tuple(constraints)
    n = lexicon.size
    stages, base_size = _filter_stages(lexicon, constraints, vocab_n_words)
    allowed = stages[-1].mask
    stage_sizes = [(s, int(s.mask.sum())) for s in stages]
    stages_json = _trace_json(stage_sizes)
    n_allowed = int(allowed.sum())
    partial = {
        "vocabulary": {
            "allowed": n_allowed,
            "base": base_size,
            "lexicon_size": n,
            "vocab_n_words": vocab_n_words,
            "survival": round(n_allowed / base_size, 4) if base_size else 0.0,
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
    domains = _Domains(lexicon, tuple(stages), allowed, top_k, partial)
    slots = tuple(
        _SLOT_BUILDERS[c.type](domains, i, c)
        for i, c in enumerate(constraints)
        if c.type in _SLOT_BUILDERS
    )
    return Solution(
        constraints=constraints,
        vocab_n_words=vocab_n_words,
        top_k=top_k,
        lexicon_size=n,
        base_size=base_size,
        allowed=allowed,
        allowed_words=tuple(lexicon.arrays.words[r] for r in np.flatnonzero(allowed)),
        slots=slots,
        soft=tuple((i, c) for i, c in enumerate(constraints) if c.type == "bound_boost"),
        stages=stages_json,
        solve_seconds=time.perf_counter() - t0,
        key=cache_key(lexicon, constraints, vocab_n_words, top_k),
    )


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
