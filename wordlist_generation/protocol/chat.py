"""OpenAI chat-completion request/response models, plus this server's extension fields.

The one place where HTTP fields become generation parameters is `decoding_params` (called by
`ChatCompletionRequest.to_params` and the text completion request's), so the decoding-mode rule is
implemented (and tested) once:

- `temperature > 0` samples (with `top_p`, `top_k`, `seed`); `num_beams` must then be 1 or unset.
- otherwise (temperature 0 or unset) beam search with `num_beams` (default `DEFAULT_NUM_BEAMS`),
  which is greedy decoding when `num_beams` is 1.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..constraints.spec import ConstraintSpec
from ..engine.params import SamplingParams
from ..errors import InvalidRequest, UnsupportedParameter
from ..settings import Settings
from .limits import check_length_penalty, check_max_tokens, check_num_beams, check_work
from .screen import screen
from .vocabulary import constraint_spec

#: Fields the OpenAI API defines that this server accepts and ignores: they change nothing about
#: the generated text. Anything else unknown is refused with 400 naming it.
IGNORED_FIELDS: frozenset[str] = frozenset(
    {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)

#: OpenAI parameters this server does not implement; sending a non-default value is a 400.
UNSUPPORTED_FIELDS: frozenset[str] = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "logit_bias",
        "audio",
        "modalities",
        "prediction",
        "reasoning_effort",
        "web_search_options",
        "verbosity",
    }
)


#: Every request model is strict, as the OpenAI API is: `"max_tokens": "4"` or `"stream": "yes"`
#: is a 400 naming the field, never converted.
STRICT = ConfigDict(extra="forbid", strict=True)


class RequestModel(BaseModel):
    """A whole request body (not a part of one): screened before validation (`screen`: lone
    surrogates, non-finite numbers, deep nesting), then validated strictly."""

    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: Any) -> Any:
        screen(data)
        return cls.prepare(data)

    @classmethod
    def prepare(cls, data: Any) -> Any:
        """The raw body after screening, before validation (the default keeps it as is)."""
        return data


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def template_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False
    #: Extension: structured progress events (phonological mode) as extra chunks.
    include_events: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ChatCompletionRequest(RequestModel):
    """A chat completion request. Unknown fields are refused, except the documented harmless ones."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="extension: sample from the k best tokens")
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0, description="extension")
    no_repeat_ngram_size: int | None = Field(
        None,
        ge=0,
        le=16,
        description="extension: never repeat a sequence of this many generated tokens (0 = off)",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    # extensions (sent through extra_body by SDK users)
    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = Field(None, ge=-10.0, le=10.0)
    vocab_lang: str | None = None
    vocab_n_words: int | None = None
    vocab_unit: Literal["word", "lemma"] | None = Field(
        None,
        description="extension: what vocab_n_words counts: word forms (default) or headwords "
        "(lemmas), all of whose listed forms are then allowed",
    )
    vocab_prompt_hint: bool | None = Field(
        None, description="extension: tell the model about the vocabulary (default from settings)"
    )
    constraints: list[dict[str, Any]] | None = None
    drafts: int | None = Field(
        None,
        ge=1,
        description="extension: candidates generated per choice, the best returned (at most "
        "MAX_DRAFTS); needs a vocabulary",
    )
    logprobs: bool | None = Field(
        None,
        description="return each answer token's log-probability (with `logprob_unconstrained`, "
        "the model's own, as an extension)",
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="alternatives listed per token (needs logprobs: true)"
    )
    #: Checked by `protocol.response_format` (errors name the key at fault).
    response_format: Any = Field(
        None,
        description="text, json_object, json_schema or (extension) regex; combines with a "
        "vocabulary: every JSON string value is then made of list words",
    )
    # unsupported OpenAI parameters: declared so we can name them in a clear 400
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    logit_bias: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None
    verbosity: Any = None

    @classmethod
    def prepare(cls, data: Any) -> Any:
        """Drops the fields accepted and ignored (`IGNORED_FIELDS`)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in IGNORED_FIELDS}
        return data

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(item == "" for item in items):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("vocab_n_words", mode="before")
    @classmethod
    def _strict_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        if isinstance(value, str):
            raise ValueError("must be an integer")
        return value

    def unsupported_fields(self) -> list[str]:
        """Unsupported OpenAI parameters sent with a value that would change the result."""
        bad = []
        for name in sorted(UNSUPPORTED_FIELDS & self.model_fields_set):
            value = getattr(self, name)
            if value in (None, False, [], {}) or (name == "parallel_tool_calls" and value is True):
                continue
            bad.append(name)
        return bad

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_spec(self, *, param_prefix: str = "") -> ConstraintSpec | None:
        """The vocabulary and answer format this request asks for, or None."""
        return constraint_spec(
            self.vocab_lang,
            self.vocab_n_words,
            self.constraints,
            vocab_unit=self.vocab_unit,
            param_prefix=param_prefix,
            response_format=self.response_format,
        )

    def to_params(self, settings: Settings) -> SamplingParams:
        """Validate the combination of fields and build the generation parameters."""
        bad = self.unsupported_fields()
        if bad:
            raise UnsupportedParameter(f"'{bad[0]}' is not supported by this server", param=bad[0])
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise InvalidRequest(
                "max_tokens and max_completion_tokens disagree; send one of them",
                param="max_completion_tokens",
            )
        max_new = self.max_completion_tokens or self.max_tokens
        param = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
        check_max_tokens(settings, max_new, param)
        max_new = max_new or settings.DEFAULT_MAX_NEW_TOKENS
        params = decoding_params(
            self, settings, max_new, work_param="max_tokens" if self.max_tokens else "n"
        )
        if self.logprobs:
            params = replace(params, logprobs=self.top_logprobs or 0)
        return params


class DecodingFields(Protocol):
    """What the decoding rule reads from a request (chat and text completions alike)."""

    n: int
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    num_beams: int | None
    length_penalty: float | None
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float | None
    no_repeat_ngram_size: int | None
    stream: bool
    stream_options: StreamOptions | None

    def stop_list(self) -> tuple[str, ...]: ...


def decoding_params(
    request: DecodingFields, settings: Settings, max_new: int, *, work_param: str
) -> SamplingParams:
    """The decoding rule (module docstring) and the server's limits on it, for `max_new` tokens
    per choice; `work_param` is the field named when the request's total work is over the cap."""
    if request.n > settings.MAX_N:
        raise InvalidRequest(f"n must be at most {settings.MAX_N}", param="n")
    sampling = request.temperature is not None and request.temperature > 0
    if sampling:
        if request.num_beams is not None and request.num_beams > 1:
            raise InvalidRequest(
                "num_beams > 1 needs temperature 0 or unset: temperature > 0 selects "
                "sampling, which does not combine with beam search on this server",
                param="num_beams",
            )
        if request.length_penalty is not None:
            raise InvalidRequest(
                "length_penalty only applies to beam search (temperature 0 or unset)",
                param="length_penalty",
            )
        num_beams = 1
    else:
        for name in ("top_p", "top_k"):
            value = getattr(request, name)
            if value is not None and not (name == "top_p" and value == 1.0):
                raise InvalidRequest(
                    f"{name} only applies when sampling (temperature > 0)", param=name
                )
        num_beams = request.num_beams or settings.DEFAULT_NUM_BEAMS
        check_num_beams(settings, num_beams)
        if request.n > num_beams:
            raise InvalidRequest(
                f"n ({request.n}) cannot exceed num_beams ({num_beams}) without sampling: "
                "raise num_beams or set temperature > 0",
                param="n",
            )
        check_length_penalty(num_beams, request.length_penalty)
    check_work(
        settings, {"n": request.n, "num_beams": num_beams, "max_tokens": max_new}, work_param
    )
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("stream_options requires stream=true", param="stream_options")
    return SamplingParams(
        max_new_tokens=max_new,
        do_sample=sampling,
        num_beams=num_beams,
        n=request.n,
        temperature=request.temperature if sampling else 1.0,
        top_p=request.top_p if request.top_p is not None else 1.0,
        top_k=request.top_k,
        seed=request.seed,
        stop=request.stop_list(),
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty or 1.0,
        no_repeat_ngram_size=request.no_repeat_ngram_size or 0,
        length_penalty=request.length_penalty if request.length_penalty is not None else 1.0,
    )


class PreviewRequest(RequestModel):
    """`POST /v1/constraints/preview`: the constraint part of a chat request, no generation."""
    constraints: list[dict[str, Any]]
    vocab_n_words: int | None = Field(None, ge=1)
    vocab_lang: Literal["en"] | None = None
    top_k: int = Field(5, ge=1, le=50)
