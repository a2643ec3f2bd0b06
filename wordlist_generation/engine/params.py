"""Generation parameters and results, independent of HTTP and of torch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..constraints.base import CompiledConstraint


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    do_sample: bool = False
    num_beams: int = 1
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    #: Never repeat an n-gram of this many generated tokens (0 = off).
    no_repeat_ngram_size: int = 0
    #: Choices below this index pick the most likely token even when sampling: the greedy draft
    #: among the sampled drafts of a greedy request.
    greedy_choices: int = 0

    def samples(self, choice: int) -> bool:
        """True when `choice` draws its tokens (it has its own seeded generator)."""
        return self.do_sample and choice >= self.greedy_choices

    @property
    def mode(self) -> str:
        if self.do_sample:
            return "sample"
        return "beam" if self.num_beams > 1 else "greedy"

    @property
    def rows(self) -> int:
        """Sequences decoded together for this request (admission counts these)."""
        return self.num_beams if self.mode == "beam" else self.n

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one batched forward pass."""
        if self.mode == "beam":
            return ("beam", self.num_beams, self.length_penalty, self.max_new_tokens)
        return ("step",)


#: A streaming callback: (choice index, text delta). Called from the generation thread.
DeltaCallback = Callable[[int, str], None]


@dataclass
class GenerationJob:
    """One request: a prompt, its parameters, an optional constraint and a cancel flag."""

    prompt_ids: list[int]
    params: SamplingParams
    constraint: CompiledConstraint | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_delta: DeltaCallback | None = None


@dataclass
class ChoiceOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    #: Mean log-probability of the chosen tokens (sampling/greedy) or the beam score.
    score: float | None = None
    #: Mean log-probability of the chosen tokens under the model alone (before penalties and the
    #: constraint mask); None where the engine does not know it (beams).
    raw_score: float | None = None


@dataclass
class GenerationOutput:
    choices: list[ChoiceOutput]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cancelled: bool = False


@dataclass
class ScoreOutput:
    """How likely the model finds each target token after what precedes it (`Engine.score`)."""

    #: Natural-log probability of each target token, in order.
    logprobs: list[float]
    #: Per target token, the `top_k` most likely token ids at that position, most likely first,
    #: and their log-probabilities; empty lists when `top_k` is 0.
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
