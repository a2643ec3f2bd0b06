"""Spec -> compiled constraint for one request, and the `constraint` object of its response."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..constraints.base import BudgetTooSmall, CheckReport, CompiledConstraint
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


async def resolve(
    state: ServerState, spec: ConstraintSpec | None, max_tokens: int, *, param_prefix: str = ""
) -> ResolvedConstraint | None:
    """Compile (or find in the cache) what `spec` asks for, off the event loop, and check that
    `max_tokens` can satisfy it. Errors name the request field (`param_prefix` locates it in an
    upload)."""
    if spec is None:
        return None
    assert state.compiler is not None
    compiled = await asyncio.to_thread(state.compiler.compile, spec)
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
