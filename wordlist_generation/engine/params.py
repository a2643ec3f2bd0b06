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
    #: Per-token log-probabilities: None = off (no extra work per step); k >= 0 = record each
    #: chosen token and its k most likely alternatives (`ChoiceOutput.token_logprobs`).
    logprobs: int | None = None
    #: Report each choice's mean log-probability (`ChoiceOutput.score`, `raw_score`), which drafts
    #: are ranked by. It costs a log-normalizer over the vocabulary per row and step (two for a
    #: constrained row), so the continuous-batching scheduler computes them only when asked (or
    #: when `logprobs` is set); otherwise its choices report None.
    scores: bool = False

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


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probabilities (natural log).

    `logprob` is under the distribution decoded from: the model's logits after penalties, the
    constraint mask (and its token bias) and, for a sampled row, the temperature, renormalised
    (log-softmax), before top-k/top-p truncation. `raw_logprob` is under the model alone
    (temperature 1, no penalties, no mask). `top` holds the `logprobs` most likely tokens of the
    decoded distribution, best first, as (id, logprob); tokens the mask rules out are never listed.
    """

    id: int
    logprob: float
    raw_logprob: float
    top: tuple[tuple[int, float], ...] = ()


#: A streaming callback: (choice index, text delta). Called from the generation thread.
DeltaCallback = Callable[[int, str], None]
#: (choice index, the entries of the tokens whose text the next delta completes). Called from the
#: generation thread just before that delta; at the end of a row possibly with no delta after it
#: (the rest of the last token's text was cut: a stop string, a trimmed word).
LogprobsCallback = Callable[[int, list[TokenLogprob]], None]


@dataclass
class GenerationJob:
    """One request: a prompt, its parameters, an optional constraint and a cancel flag."""

    prompt_ids: list[int]
    params: SamplingParams
    constraint: CompiledConstraint | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_delta: DeltaCallback | None = None
    #: With `params.logprobs` set and streaming: the token entries that go with each delta.
    on_logprobs: LogprobsCallback | None = None


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
    #: With `params.logprobs` set: one entry per token whose text is, at least in part, in
    #: `text`, in order (the end-of-turn token, a stop string's own tokens and the tokens of a
    #: trimmed fragment are not listed); None otherwise.
    token_logprobs: list[TokenLogprob] | None = None


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
