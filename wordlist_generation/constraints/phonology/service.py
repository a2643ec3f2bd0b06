"""Phonological mode as a compile handler: lexicon lifecycle, solve + compile, API errors.

The lexicon is loaded (built on first use, then a parquet cache) and warmed in a background thread
started when the app is ready, so it never delays `ready`; the first phonological request waits for
it. Caching and single-flight compilation belong to `ConstraintCompiler`, which this handler is
registered with for `PhonologicalSpec`: `key` is cheap and checks the backend, `compile` waits
for the lexicon, solves and builds the grammar, raising API errors that name the constraint at
fault.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ... import errors
from ..compiler import SpecHandler
from ..spec import PhonologicalSpec
from ..tokenizer import TokenizerTables
from .constraint import PhonologicalConstraint
from .errors import UnsatisfiableConstraint, UnsupportedBackend, require_llguidance
from .lexicon import Lexicon
from .solve import DEFAULT_TOP_K, GRAMMAR_VERSION, preview, solve

log = logging.getLogger(__name__)


class PhonologyHandler(SpecHandler[PhonologicalSpec]):
    """Compiles `PhonologicalSpec`s for one tokenizer, over one lazily loaded lexicon.

    No cache of its own: `ConstraintCompiler` caches by `key` and compiles each key once.
    """

    def __init__(
        self,
        tables: TokenizerTables,
        cache_dir: Path,
        backend: str = "llguidance",
        *,
        lexicon: Lexicon | None = None,
    ) -> None:
        """`tables` are the application's tokenizer tables (shared with every constraint kind);
        `lexicon`, when given, is used as is (already loaded: tests, scripts)."""
        self.tables = tables
        self.cache_dir = cache_dir
        self.backend = backend
        self._lexicon: Future[Lexicon] = Future()
        self._lock = threading.Lock()
        self._loading = lexicon is not None
        self.load_seconds: float | None = None
        if lexicon is not None:
            self._lexicon.set_result(lexicon)

    def start_loading(self) -> None:
        """Load and warm the lexicon in the background (idempotent)."""
        with self._lock:
            if self._loading:
                return
            self._loading = True
        threading.Thread(target=self._load, name="lexicon-loader", daemon=True).start()

    def _load(self) -> None:
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

    def lexicon(self, timeout: float = 120.0) -> Lexicon:
        """The loaded lexicon (waits for the background load), or a `lexicon_unavailable` error."""
        self.start_loading()
        try:
            return self._lexicon.result(timeout)
        except Exception as exc:
            raise errors.ApiError(
                "the pronunciation lexicon is unavailable; see the server log",
                code="lexicon_unavailable",
            ) from exc

    def preview(
        self, constraints: Sequence[Any], vocab_n_words: int | None, top_k: int
    ) -> dict[str, Any]:
        """Survival, domain sizes and top candidates, without compiling (see `solve.preview`)."""
        return preview(self.lexicon(), constraints, vocab_n_words, top_k)

    def key(self, spec: PhonologicalSpec) -> Hashable:
        try:
            require_llguidance(self.backend)
        except UnsupportedBackend as exc:
            raise errors.InvalidConstraint(str(exc), param="constraints") from exc
        return (GRAMMAR_VERSION, DEFAULT_TOP_K, tuple(spec.constraints), spec.n_words)

    def compile(self, spec: PhonologicalSpec) -> PhonologicalConstraint:
        lexicon = self.lexicon()
        try:
            solution = solve(lexicon, spec.constraints, spec.n_words)
        except UnsatisfiableConstraint as exc:
            index = exc.constraint_index
            raise errors.UnsatisfiableConstraint(
                exc.message,
                param=f"constraints.{index}" if index is not None else "constraints",
                extra={"constraint_index": index, "domain_sizes": exc.domain_sizes},
            ) from exc
        return PhonologicalConstraint(solution, lexicon, self.tables)
