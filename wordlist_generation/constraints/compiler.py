"""One compile path for every constraint kind: spec -> handler -> cached `CompiledConstraint`.

xgrammar's shape (tokenizer info -> one cached compiler -> matchers), with our own extras: each spec
type registers a `SpecHandler`, whose `key` is cheap (it validates the spec against what the server
has, raising typed errors that name the field, and names what the compiled result depends on) and
whose `compile` is the expensive part. One single-flight LRU serves every kind, so two requests
for the same constraint share one compilation whatever its kind.
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

    def __init__(self, cache_size: int = 32) -> None:
        self._handlers: dict[type, SpecHandler[Any]] = {}
        self._cache: SingleFlightLRU[tuple[str, Hashable], CompiledConstraint] = SingleFlightLRU(
            cache_size
        )

    def register(self, spec_type: type[S], handler: SpecHandler[S]) -> None:
        self._handlers[spec_type] = handler

    def handler(self, spec_type: type[S]) -> SpecHandler[S]:
        try:
            return self._handlers[spec_type]
        except KeyError:
            raise TypeError(f"no compile handler registered for {spec_type.__name__}") from None

    def compile(self, spec: Any) -> Compiled:
        handler = self.handler(type(spec))
        key = (type(spec).__name__, handler.key(spec))
        t0 = time.perf_counter()
        constraint, hit = self._cache.get_or_compute(key, lambda: handler.compile(spec))
        if hit:
            return Compiled(constraint, True, 0.0)
        handler.compiled(constraint)
        return Compiled(constraint, False, time.perf_counter() - t0)

    def cached(self) -> list[dict[str, Any]]:
        """What the cache holds, most recently used last (diagnostics)."""
        return [c.describe() for c in self._cache.values()]

    def __len__(self) -> int:
        return len(self._cache)
