"""Spec -> compiled constraint for one request, and the `constraint` object of its response."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..constraints.base import BudgetTooSmall, CheckReport, CompiledConstraint
from ..constraints.compiler import Compiled
from ..constraints.spec import ConstraintSpec
from ..errors import InvalidRequest
from .state import ServerState


@dataclass
class ResolvedConstraint:
    spec: ConstraintSpec
    constraint: CompiledConstraint
    cache_hit: bool
    compile_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self, checks: list[CheckReport]) -> dict[str, Any]:
        """The `constraint` extension object: what was enforced and the independent re-checks of
        the returned texts (`self.constraint.check`, one per choice).

        `compliant` comes from the re-check alone: an answer cut by max_tokens before its required
        words appeared is reported as not compliant, with the verdicts saying what is missing.
        """
        violations = sorted({v for c in checks for v in c.violations})
        info: dict[str, Any] = {
            **self.constraint.describe(),
            "cache_hit": self.cache_hit,
            "compile_seconds": round(self.compile_seconds, 4),
            "violations": violations,
            "compliant": all(c.ok for c in checks),
        }
        details = [c.details for c in checks if c.details]
        if details:
            info["checks"] = details
        info.update(self.extra)
        return info


async def compile_spec(state: ServerState, spec: ConstraintSpec, *, wait: bool = False) -> Compiled:
    """`spec` compiled, off the event loop: a cache hit at once, a compilation through the work
    gate (429 when it is full, unless `wait`: the batch worker waits its turn)."""
    compiler = state.compiler
    assert compiler is not None and state.gate is not None
    hit = await asyncio.to_thread(compiler.lookup, spec)
    if hit is not None:
        return hit
    return await state.gate.run(compiler.compile, spec, wait=wait)


async def resolve(
    state: ServerState,
    spec: ConstraintSpec | None,
    max_tokens: int,
    *,
    param_prefix: str = "",
    wait: bool = False,
) -> ResolvedConstraint | None:
    """Compile (or find in the cache) what `spec` asks for (`compile_spec`), and check that
    `max_tokens` can satisfy it. Errors name the request field (`param_prefix` locates it in an
    upload)."""
    if spec is None:
        return None
    compiled = await compile_spec(state, spec, wait=wait)
    try:
        compiled.constraint.check_budget(max_tokens)
    except BudgetTooSmall as exc:
        raise InvalidRequest(
            str(exc), param=f"{param_prefix}max_tokens", code="max_tokens_too_small"
        ) from exc
    return ResolvedConstraint(
        spec=spec,
        constraint=compiled.constraint,
        cache_hit=compiled.cache_hit,
        compile_seconds=compiled.compile_seconds,
    )
