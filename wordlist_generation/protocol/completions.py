"""`POST /v1/completions`: OpenAI's legacy text completion request and response, plus this
server's extension fields (the decoding and vocabulary fields of chat).

The prompt is raw text: no chat template, no vocabulary hint (`vocab_prompt_hint` is refused as
an unknown field). Generation parameters come from the same decoding rule as chat
(`chat.decoding_params`); the fields that differ are OpenAI's own: `max_tokens` defaults to 16 and
may be 0 with `echo` (the prompt is returned, and scored with `logprobs`), `logprobs` is a top-k
count (0-5), and `suffix`, `best_of` and `logit_bias` are refused unless left at their defaults.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

from ..constraints.spec import ConstraintSpec
from ..engine.params import SamplingParams
from ..errors import InvalidRequest, UnsupportedParameter
from ..settings import Settings
from .chat import (
    IGNORED_FIELDS,
    ChatCompletionRequest,
    RequestModel,
    StreamOptions,
    decoding_params,
)
from .limits import check_max_tokens, check_work
from .responses import Usage
from .vocabulary import constraint_spec

#: OpenAI's default `max_tokens` for text completions.
DEFAULT_MAX_TOKENS = 16
#: The most alternatives `logprobs` may ask for (OpenAI's limit).
MAX_LOGPROBS = 5
#: Most prompts one request may carry in any configuration (the server's own bound is `MAX_N`).
MAX_PROMPTS = 128

Prompts = Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]


class CompletionRequest(RequestModel):
    """A text completion request. Unknown fields are refused, except the documented harmless ones
    (chat's `IGNORED_FIELDS`)."""

    model: str = Field(min_length=1)
    prompt: str | Prompts = Field(
        description="the text to continue, or a list of them (one set of n choices per prompt, "
        "at most MAX_N prompts)"
    )
    echo: bool = Field(False, description="return the prompt before the completion")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_LOGPROBS,
        description="log-probabilities of the returned tokens and of this many alternatives",
    )
    max_tokens: int | None = Field(
        DEFAULT_MAX_TOKENS, ge=0, description="tokens to generate (0 only with echo)"
    )
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # extensions (sent through extra_body by SDK users), as chat has them
    top_k: int | None = Field(None, ge=1, description="extension: sample from the k best tokens")
    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = Field(None, ge=-10.0, le=10.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0, description="extension")
    no_repeat_ngram_size: int | None = Field(
        None, ge=0, le=16, description="extension: never repeat an n-gram of generated tokens"
    )
    vocab_lang: str | None = Field(None, description="extension: restrict to this word list")
    vocab_n_words: StrictInt | None = Field(None, description="extension: with vocab_lang")
    vocab_unit: Literal["word", "lemma"] | None = Field(
        None, description="extension: what vocab_n_words counts (word forms or headwords)"
    )
    constraints: list[dict[str, Any]] | None = Field(
        None, description="extension: phonological constraints"
    )
    drafts: int | None = Field(
        None, ge=1, description="extension: candidates per choice, the best returned"
    )
    # OpenAI parameters this server does not implement: a 400 naming them unless at the default
    suffix: Any = None
    best_of: Any = None
    logit_bias: Any = None

    @classmethod
    def prepare(cls, data: Any) -> Any:
        """Drops the fields accepted and ignored (`IGNORED_FIELDS`, e.g. `user`)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in IGNORED_FIELDS}
        return data

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must be a string or a non-empty list of strings")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise InvalidRequest(
                        f"Invalid value for 'prompt.{i}': must be a string", param=f"prompt.{i}"
                    )
        elif not isinstance(value, str):
            raise ValueError("must be a string or a list of strings")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return ChatCompletionRequest._stop(value)  # the same rule as chat's

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def prompt_params(self) -> list[str]:
        """The field naming each prompt in errors: `prompt`, or `prompt.<i>` in a list."""
        if isinstance(self.prompt, str):
            return ["prompt"]
        return [f"prompt.{i}" for i in range(len(self.prompt))]

    def unsupported_fields(self) -> list[str]:
        """Unsupported OpenAI parameters sent with a value other than their default."""
        bad = []
        if self.suffix not in (None, ""):
            bad.append("suffix")
        if self.best_of is not None and not (type(self.best_of) is int and self.best_of == 1):
            bad.append("best_of")
        if self.logit_bias not in (None, {}):
            bad.append("logit_bias")
        return bad

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_spec(self) -> ConstraintSpec | None:
        return constraint_spec(
            self.vocab_lang, self.vocab_n_words, self.constraints, vocab_unit=self.vocab_unit
        )

    def to_params(self, settings: Settings) -> SamplingParams:
        """Validate the combination of fields and build the generation parameters (chat's
        decoding rule; `max_new_tokens` 0 means the prompt alone is returned)."""
        bad = self.unsupported_fields()
        if bad:
            raise UnsupportedParameter(
                f"'{bad[0]}' is not supported by this server (only its default)", param=bad[0]
            )
        max_new = DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens
        check_max_tokens(settings, max_new)
        if max_new == 0:
            if not self.echo:
                raise InvalidRequest(
                    "max_tokens 0 generates nothing: it needs echo: true (the prompt returned, "
                    "and scored with logprobs)",
                    param="max_tokens",
                )
            if self.vocab_lang is not None or self.vocab_n_words is not None or self.constraints:
                raise InvalidRequest(
                    "a vocabulary restricts generated text, and max_tokens 0 generates none",
                    param="max_tokens",
                )
        prompts = len(self.prompts())
        if prompts > settings.MAX_N:
            raise InvalidRequest(
                f"at most {settings.MAX_N} prompts per request (MAX_N); you sent {prompts}",
                param="prompt",
            )
        if self.stream and prompts > 1:
            raise InvalidRequest(
                "a list of prompts cannot be streamed: send one prompt per streamed request",
                param="prompt",
            )
        params = decoding_params(self, settings, max_new, work_param="max_tokens")
        factors = {"prompts": prompts, "n": params.n, "num_beams": params.num_beams}
        check_work(settings, {**factors, "max_tokens": max_new}, "prompt")
        if self.logprobs is not None and max_new > 0:
            params = replace(params, logprobs=self.logprobs)
        return params


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs object: one entry per returned token, in order.

    `token_logprobs` and `top_logprobs` are null for the first token of an echoed prompt (nothing
    precedes it); `top_logprobs` maps the `logprobs` most likely tokens, and the returned one, to
    their log-probabilities. A token the model rules out has -9999.0 (JSON has no -infinity).
    `text_offset` is each token's character offset in `text` (a BOS token the tokenizer adds,
    not in the text, has 0).
    """

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None
    #: Extension: how the output was constrained and the independent re-check (null if
    #: unconstrained), as chat's.
    constraint: dict[str, Any] | None = None


class TextCompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    constraint: dict[str, Any] | None = None
    #: Extension: a structured progress event (only with stream_options.include_events).
    event: dict[str, Any] | None = None
