"""Drafts: several candidates per returned choice, the best kept.

A request with `drafts: k` gets `k` candidates per choice and the best is returned. Sampling
requests draw them as extra samples; beam search takes them from its best beams; a greedy request
keeps its greedy answer as draft 0 and samples the others at `DRAFT_TEMPERATURE` (seeded from the
request's seed, 0 when it sends none, so that the same request gives the same answer).

Ranking, best first: compliance (the independent re-check), then the soft score when the
constraint has soft parts (phonological `bound_boost`), then the fluency score:

    fluency = mean log-probability of the answer's tokens under the model alone (before
              penalties and the constraint mask)
              - REPEAT_WEIGHT x share of the answer's word trigrams that repeat an earlier one

The model's own probability says how natural the text is, whatever the mask forced; the
repetition term is there because a looping text ("no, no, no, no") is the most predictable text
there is (mean log-probability near 0), so the first term alone would rank it first. A fully
looping answer loses `REPEAT_WEIGHT` nats per token: more than a plain answer's whole mean
log-probability (about -1.5 to -3 on the embedded model), so a loop never beats an answer that
does not loop.
Beams have no unmasked log-probability: their beam score stands in for it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..constraints.base import CheckReport, CompiledConstraint
from ..engine.params import ChoiceOutput, GenerationOutput, SamplingParams
from ..errors import InvalidRequest

#: Drafts of a request with soft constraints that does not say how many (sampling or beams).
DEFAULT_DRAFTS = 3
#: Nats per token a fully repetitive answer loses in the fluency score.
REPEAT_WEIGHT = 4.0

_WORD = re.compile(r"[^\W\d_]+(?:['’.\-·][^\W\d_]+)*", re.UNICODE)


def choose_drafts(
    constraint: CompiledConstraint | None,
    params: SamplingParams,
    asked: int | None,
    max_drafts: int = 8,
) -> int:
    """How many candidates to generate per returned choice (`drafts`, or the default).

    Drafts need a vocabulary (a word list or sound constraints): they are ranked by its re-check.
    Without `drafts`, soft constraints get `DEFAULT_DRAFTS` when sampling (as many as the beams
    allow with beam search), everything else one. Beam search takes drafts from its beams, so it
    needs `num_beams >= n x drafts`.
    """
    if asked is not None and asked > max_drafts:
        raise InvalidRequest(f"drafts must be at most {max_drafts}", param="drafts")
    if constraint is None:
        if asked not in (None, 1):
            raise InvalidRequest(
                "drafts needs a vocabulary (vocab_lang and vocab_n_words, or constraints): "
                "drafts are ranked by its re-check",
                param="drafts",
            )
        return 1
    soft = constraint.has_soft_constraints
    if params.mode == "beam":
        capacity = params.num_beams // params.n
        if asked is None:
            return max(1, min(DEFAULT_DRAFTS, capacity)) if soft else 1
        if asked > capacity:
            raise InvalidRequest(
                f"drafts={asked} needs num_beams >= n x drafts = {params.n * asked} with beam "
                f"search (num_beams is {params.num_beams}); raise num_beams, or use num_beams 1 "
                "(greedy: the other drafts are sampled)",
                param="drafts",
            )
        return asked
    if asked is None:
        return DEFAULT_DRAFTS if soft and params.mode == "sample" else 1
    return asked


def draft_params(params: SamplingParams, drafts: int, temperature: float) -> SamplingParams:
    """The parameters that generate `drafts` candidates per choice of `params`."""
    if drafts == 1:
        return params
    if params.mode == "greedy":
        return replace(
            params,
            n=params.n * drafts,
            do_sample=True,
            temperature=temperature,
            top_p=1.0,
            top_k=None,
            seed=params.seed if params.seed is not None else 0,
            greedy_choices=params.n,
            scores=True,
        )
    return replace(params, n=params.n * drafts, scores=True)


def repeated_trigrams(text: str) -> float:
    """Share of the word trigrams of `text` (case-folded) that already occurred in it."""
    words = [w.casefold() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def fluency(choice: ChoiceOutput) -> tuple[float | None, float]:
    """(fluency score, repeated-trigram share) of one candidate; the score is None when the
    engine reported no log-probability at all."""
    repeats = repeated_trigrams(choice.text)
    lp = choice.raw_score if choice.raw_score is not None else choice.score
    if lp is None:
        return None, repeats
    return lp - REPEAT_WEIGHT * repeats, repeats


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def select_drafts(
    constraint: CompiledConstraint,
    n: int,
    output: GenerationOutput,
    checks: list[CheckReport],
) -> tuple[GenerationOutput, list[CheckReport], list[dict[str, Any]]]:
    """Keep the best `n` of `output.choices`; `checks` are their re-checks, returned for the kept
    ones so that no text is checked twice. Also returns one summary per draft."""
    scored = []
    for c, report in zip(output.choices, checks, strict=True):
        soft = constraint.soft_score(c.text) if constraint.has_soft_constraints else 0.0
        score, repeats = fluency(c)
        key = (report.ok, soft, score if score is not None else float("-inf"))
        scored.append((key, c, report, score, repeats))
    ranking = sorted(scored, key=lambda t: t[0], reverse=True)
    keep = ranking[:n]
    kept = {id(k[1]) for k in keep}
    drafts = []
    for key, c, _, score, repeats in scored:
        entry: dict[str, Any] = {"draft": c.index, "compliant": key[0]}
        if constraint.has_soft_constraints:
            entry["soft_score"] = round(key[1], 4)
        entry.update(
            fluency=_round(score),
            mean_logprob=_round(c.score),
            mean_logprob_unconstrained=_round(c.raw_score),
            repeated_trigrams=round(repeats, 4),
            selected=id(c) in kept,
            text=c.text,
        )
        drafts.append(entry)
    chosen = [replace(k[1], index=i) for i, k in enumerate(keep)]
    return replace(output, choices=chosen), [k[2] for k in keep], drafts
