"""Failures of phonological mode, as typed exceptions; `service` maps them to API errors.

No web framework here: the solver and the constraint raise these, and the compile handler turns each
into the `errors.ApiError` that names the request field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import BudgetTooSmall as BaseBudgetTooSmall


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


class UnsupportedBackend(PhonologyError):
    """The configured constraint backend cannot compile phonological grammars."""

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"phonological constraints need the llguidance backend (CONSTRAINT_BACKEND=llguidance); "
            f"the configured backend {backend!r} (lm-format-enforcer) cannot compile a "
            f"whole-lexicon grammar in time"
        )
        self.backend = backend


class BudgetTooSmall(BaseBudgetTooSmall, PhonologyError):
    """`max_tokens` can never fit the required words."""

    def __init__(self, max_tokens: int, needed: int, words: Sequence[str]) -> None:
        super().__init__(
            f"max_tokens={max_tokens} can never fit the required words ({', '.join(words)}): "
            f"they need at least {needed} tokens",
            needed=needed,
        )
        self.max_tokens = max_tokens
        self.words = list(words)


def require_llguidance(backend: str) -> None:
    """Raise `UnsupportedBackend` unless `backend` is llguidance."""
    if backend != "llguidance":
        raise UnsupportedBackend(backend)
