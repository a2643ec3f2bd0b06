"""OpenAI response and chunk models, plus this server's extension fields."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


#: What a log-probability of minus infinity (or any non-finite value) is sent as: JSON has no
#: infinity, and OpenAI's API uses this value for tokens it deems impossible.
LOGPROB_FLOOR = -9999.0


def finite_logprob(value: float) -> float:
    return value if math.isfinite(value) and value > LOGPROB_FLOOR else LOGPROB_FLOOR


class TopLogprob(BaseModel):
    token: str
    logprob: float
    #: The token's own bytes (its text is their UTF-8 decoding, escaped where not whole UTF-8).
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]
    #: Extension: the model's own log-probability of the token (temperature 1, before penalties
    #: and the constraint mask); null where the engine does not know it.
    logprob_unconstrained: float | None = None


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None
    refusal: list[TokenLogprobEntry] | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    #: Extension: how the output was constrained and the independent re-check (null if unconstrained).
    constraint: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    constraint: dict[str, Any] | None = None
    #: Extension: a structured progress event (only with stream_options.include_events).
    event: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "wordlist-generation"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
