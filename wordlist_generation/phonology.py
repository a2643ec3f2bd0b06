"""Phonological mode as a service: lexicon lifecycle, compile cache, errors in the API's terms.

The lexicon is loaded (built on first use, then a parquet cache) and warmed in a background thread
started when the app is ready, so it never delays `ready`; the first phonological request waits for
it. Compiled constraints are cached per solved request (the solution's key), compiled once even
when several requests ask at the same time.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .constraints.cache import SingleFlightLRU
from .errors import ApiError, InvalidConstraint, InvalidRequest, UnsatisfiableConstraint

log = logging.getLogger(__name__)


@dataclass
class CompiledPhonology:
    constraint: Any  # constraints.phonological.PhonologicalConstraint
    cache_hit: bool
    solve_seconds: float
    compile_seconds: float


def _param_from_loc(loc: tuple[Any, ...], prefix: str) -> str:
    """(1, 'exclude', 'phonemes', 0) -> 'constraints.1.phonemes.0' (the union tag dropped)."""
    parts = [prefix]
    for i, part in enumerate(loc):
        if i == 1 and isinstance(part, str) and isinstance(loc[0], int):
            continue  # the discriminator tag pydantic inserts
        parts.append(str(part))
    return ".".join(parts)


def parse(data: Any, prefix: str = "constraints") -> list[Any]:
    """Validate a raw `constraints` list into constraint models, or a 400 naming the field."""
    from .constraints.phonological import parse_constraints

    if not isinstance(data, list) or not data:
        raise InvalidConstraint("constraints must be a non-empty list", param=prefix)
    try:
        return parse_constraints(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        kind = err.get("type")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            return_param = f"{prefix}.{loc[0]}.type" if loc else f"{prefix}.type"
            raise InvalidConstraint(
                str(err.get("msg")).replace("Input tag", "unknown constraint type"),
                param=return_param,
            ) from exc
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        param = _param_from_loc(loc, prefix)
        raise InvalidConstraint(f"Invalid value for '{param}': {msg}", param=param) from exc


class PhonologyService:
    def __init__(
        self, tokenizer: Any, ll_tokenizer: Any, cache_dir: Path, cache_size: int = 32
    ) -> None:
        self.tokenizer = tokenizer
        self.ll_tokenizer = ll_tokenizer
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self._lexicon: Future[Any] = Future()
        self._cache: SingleFlightLRU[str, Any] = SingleFlightLRU(cache_size)
        self._lock = threading.Lock()
        self._loading = False
        self.load_seconds: float | None = None

    def start_loading(self) -> None:
        """Load and warm the lexicon in the background (idempotent)."""
        with self._lock:
            if self._loading:
                return
            self._loading = True
        threading.Thread(target=self._load, name="lexicon-loader", daemon=True).start()

    def _load(self) -> None:
        from .constraints.lexicon import Lexicon

        t0 = time.perf_counter()
        try:
            lexicon = Lexicon.load(self.cache_dir)
            lexicon.warm()
        except Exception as exc:
            log.exception("the pronunciation lexicon failed to load")
            self._lexicon.set_exception(exc)
            return
        self.load_seconds = time.perf_counter() - t0
        log.info("lexicon ready in %.2f s (%d words)", self.load_seconds, lexicon.size)
        self._lexicon.set_result(lexicon)

    def lexicon(self, timeout: float = 120.0) -> Any:
        self.start_loading()
        try:
            return self._lexicon.result(timeout)
        except Exception as exc:
            raise ApiError(
                "the pronunciation lexicon is unavailable; see the server log",
                code="lexicon_unavailable",
            ) from exc

    def preview(
        self, constraints: list[Any], vocab_n_words: int | None, top_k: int
    ) -> dict[str, Any]:
        from .constraints.phonological import preview

        return preview(self.lexicon(), constraints, vocab_n_words, top_k)

    def compile(
        self, constraints: list[Any], vocab_n_words: int | None, backend: str
    ) -> CompiledPhonology:
        """Solve + compile (cached). Raises API errors naming the constraint at fault."""
        from .constraints import phonological as ph

        try:
            ph.require_llguidance(backend)
        except ph.UnsupportedBackend as exc:
            raise InvalidConstraint(str(exc), param="constraints") from exc
        lexicon = self.lexicon()
        t0 = time.perf_counter()
        try:
            solution = ph.solve(lexicon, constraints, vocab_n_words)
        except ph.UnsatisfiableConstraint as exc:
            index = exc.constraint_index
            raise UnsatisfiableConstraint(
                exc.message,
                param=f"constraints.{index}" if index is not None else "constraints",
                extra={"constraint_index": index, "domain_sizes": exc.domain_sizes},
            ) from exc
        solve_seconds = time.perf_counter() - t0
        compiled: list[float] = []

        def build() -> Any:
            try:
                constraint = ph.PhonologicalConstraint(
                    solution, lexicon, self.tokenizer, self.ll_tokenizer
                )
            except ph.GrammarTooLarge as exc:
                raise InvalidConstraint(str(exc), param="constraints") from exc
            compiled.append(constraint.compile_seconds)
            return constraint

        constraint, hit = self._cache.get_or_compute(solution.key, build)
        return CompiledPhonology(constraint, hit, solve_seconds, compiled[0] if compiled else 0.0)


def check_budget(constraint: Any, max_tokens: int, param: str = "max_tokens") -> None:
    from .constraints.phonological import BudgetTooSmall

    try:
        constraint.check_budget(max_tokens)
    except BudgetTooSmall as exc:
        raise InvalidRequest(str(exc), param=param, code="max_tokens_too_small") from exc
