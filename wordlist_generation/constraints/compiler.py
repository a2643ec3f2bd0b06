"""One compile path for every constraint kind: spec -> handler -> cached `CompiledConstraint`.

xgrammar's shape (tokenizer info -> one cached compiler -> matchers), with our own extras: each spec
type registers a `SpecHandler`, whose `key` is cheap (it validates the spec against what the server
has, raising typed errors that name the field, and names what the compiled result depends on) and
whose `compile` is the expensive part. One single-flight LRU serves every kind, so two requests
for the same constraint share one compilation whatever its kind.

The cache is bounded in entries and in bytes (`CONSTRAINT_CACHE_MB`). A compiled constraint holds
mostly native memory (llguidance's grammar, lexer automaton and our mask caches), which
`tracemalloc` cannot see, and it keeps growing after compilation, while it is warmed and used.
So an entry weighs the larger of two figures: the private memory (RssAnon) the process gained
while compiling it, measured, and the handler's `footprint`, what such a constraint holds once
warm and in use (calibrated with `scripts/bench_cache_memory.py`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .base import CompiledConstraint
from .cache import SingleFlightLRU

log = logging.getLogger(__name__)

S = TypeVar("S")

MIB = 1 << 20
#: Private memory of an llguidance constraint once warm and in use: a fixed part plus a part
#: proportional to its Lark grammar's length (measured: `scripts/bench_cache_memory.py`).
LLG_FIXED_BYTES = 8 * MIB
LLG_BYTES_PER_GRAMMAR_CHAR = 256


def private_memory() -> int | None:
    """This process's private resident memory (RssAnon) in bytes; None where /proc has none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class SpecHandler(ABC, Generic[S]):
    """Compiles one kind of spec for one tokenizer."""

    @abstractmethod
    def key(self, spec: S) -> Hashable:
        """What the compiled constraint depends on (list contents, options, versions).

        Cheap and blocking; raises typed errors (`errors.ApiError`) naming the request field when
        the spec cannot be served (unknown language, size out of range, ...).
        """

    @abstractmethod
    def compile(self, spec: S) -> CompiledConstraint:
        """The expensive part, run once per key."""

    def compiled(self, constraint: CompiledConstraint) -> None:
        """Called once after a fresh compilation (e.g. to warm it in the background)."""

    def footprint(self, constraint: CompiledConstraint) -> int:
        """Bytes of private memory `constraint` is expected to hold once warm and in use; the
        cache weighs an entry with the larger of this and what its compilation was measured to
        take. The default fits a plain llguidance matcher over the constraint's exported
        grammar (0 without one)."""
        grammar = constraint.exported_grammar()
        if grammar is None:
            return 0
        return LLG_FIXED_BYTES + LLG_BYTES_PER_GRAMMAR_CHAR * len(grammar.text)


@dataclass
class Compiled:
    """A compiled constraint as one request sees it."""

    constraint: CompiledConstraint
    cache_hit: bool
    #: Seconds this request waited for the compilation (0.0 on a cache hit).
    compile_seconds: float


class ConstraintCompiler:
    """The registry of spec handlers and the one cache in front of them. Thread-safe, blocking:
    callers on an event loop run `compile` in a thread."""

    def __init__(self, cache_size: int = 32, max_bytes: int | None = None) -> None:
        self._handlers: dict[type, SpecHandler[Any]] = {}
        self._cache: SingleFlightLRU[tuple[str, Hashable], CompiledConstraint] = SingleFlightLRU(
            cache_size, max_bytes
        )
        #: The weight given to the latest compilation (diagnostics, benchmarks).
        self.last_weight = 0

    def register(self, spec_type: type[S], handler: SpecHandler[S]) -> None:
        self._handlers[spec_type] = handler

    def handler(self, spec_type: type[S]) -> SpecHandler[S]:
        try:
            return self._handlers[spec_type]
        except KeyError:
            raise TypeError(f"no compile handler registered for {spec_type.__name__}") from None

    def _key(self, spec: Any) -> tuple[SpecHandler[Any], tuple[str, Hashable]]:
        handler = self.handler(type(spec))
        return handler, (type(spec).__name__, handler.key(spec))

    def lookup(self, spec: Any) -> Compiled | None:
        """The cached constraint of `spec` (validated as `compile` does), or None: cheap, so a
        caller can skip the queue for heavy work on a hit."""
        _, key = self._key(spec)
        constraint = self._cache.get(key)
        return None if constraint is None else Compiled(constraint, True, 0.0)

    def compile(self, spec: Any) -> Compiled:
        handler, key = self._key(spec)
        t0 = time.perf_counter()
        measured = 0

        def compute() -> CompiledConstraint:
            nonlocal measured
            before = private_memory()
            constraint = handler.compile(spec)
            after = private_memory()
            if before is not None and after is not None:
                measured = after - before
            return constraint

        def weigh(constraint: CompiledConstraint) -> int:
            expected = handler.footprint(constraint)
            weight = max(measured, expected)
            self.last_weight = weight
            log.info(
                "constraint %s weighs %.1f MiB (compilation took %.1f MiB, in use expected "
                "%.1f MiB)",
                key[0],
                weight / MIB,
                measured / MIB,
                expected / MIB,
            )
            return weight

        constraint, hit = self._cache.get_or_compute(key, compute, weigh)
        if hit:
            return Compiled(constraint, True, 0.0)
        handler.compiled(constraint)
        return Compiled(constraint, False, time.perf_counter() - t0)

    @property
    def cached_bytes(self) -> int:
        """The weight of everything cached (see the module docstring)."""
        return self._cache.bytes

    def cached(self) -> list[dict[str, Any]]:
        """What the cache holds, most recently used last (diagnostics)."""
        return [c.describe() for c in self._cache.values()]

    def __len__(self) -> int:
        return len(self._cache)
