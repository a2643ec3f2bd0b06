"""Drafts: several candidates per returned choice, the best kept.

Constraints with soft scores (`CompiledConstraint.has_soft_constraints`) rank candidates; the
ranking is compliance first (the independent re-check), then the soft score, then the mean token
log-probability (fluency as the model sees it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..constraints.base import CheckReport, CompiledConstraint
from ..engine.params import GenerationOutput, SamplingParams
from ..errors import InvalidRequest

DEFAULT_DRAFTS = 3


def choose_drafts(
    constraint: CompiledConstraint | None, params: SamplingParams, asked: int | None
) -> int:
    """How many candidates to generate per returned choice.

    Soft constraints pick among drafts (default 3). Sampling draws them as extra samples; beam
    search takes them from its best beams, so it needs `num_beams >= n x drafts`; greedy decoding
    has a single candidate.
    """
    if constraint is None or not constraint.has_soft_constraints:
        if asked not in (None, 1):
            raise InvalidRequest(
                "drafts only applies when the request has soft constraints (bound_boost)",
                param="drafts",
            )
        return 1
    if params.mode == "sample":
        return asked or DEFAULT_DRAFTS
    capacity = params.num_beams // params.n
    if asked is None:
        return max(1, min(DEFAULT_DRAFTS, capacity))
    if asked > capacity:
        raise InvalidRequest(
            f"drafts={asked} needs num_beams >= n x drafts = {params.n * asked} without sampling "
            f"(num_beams is {params.num_beams}); raise num_beams or set temperature > 0",
            param="drafts",
        )
    return asked


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
        soft = constraint.soft_score(c.text)
        lp = c.score if c.score is not None else float("-inf")
        scored.append((report.ok, soft, lp, c, report))
    ranking = sorted(scored, key=lambda t: (t[0], t[1], t[2]), reverse=True)
    keep = ranking[:n]
    drafts = [
        {
            "draft": c.index,
            "compliant": ok,
            "soft_score": round(soft, 4),
            "mean_logprob": round(lp, 4) if lp != float("-inf") else None,
            "selected": any(k[3] is c for k in keep),
            "text": c.text,
        }
        for ok, soft, lp, c, _ in scored
    ]
    chosen = [replace(k[3], index=i) for i, k in enumerate(keep)]
    return replace(output, choices=chosen), [k[4] for k in keep], drafts
