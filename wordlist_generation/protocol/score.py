"""`POST /v1/score`: the request (strict, like every request body) and the response models.

A text is read, not written: the response says how likely the model found each of its tokens,
summed per word, and, when a vocabulary is named, which of its words fall outside it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from ..constraints.spec import ConstraintSpec
from ..errors import InvalidRequest
from .chat import STRICT, ChatMessage, RequestModel
from .vocabulary import constraint_spec

#: Most texts one request may carry in any configuration (the server's own bound is `MAX_N`).
MAX_TEXTS = 128
#: Most alternatives reported per position.
MAX_TOP_K = 20

Text = Annotated[str, Field(min_length=1)]
Detail = Literal["summary", "per_token", "per_word"]

#: The rules between fields, stated in the request's JSON schema too (for generated clients and
#: schemathesis): exactly one of `text` and `texts`; `top_k` only with `detail: per_token`.
COMBINATIONS: dict[str, Any] = {
    "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],
    "anyOf": [
        {"not": {"required": ["top_k"]}},
        {"properties": {"top_k": {"const": 0}}},
        {"properties": {"detail": {"const": "per_token"}}, "required": ["detail"]},
    ],
}


class ScoreRequest(RequestModel):
    """One text (`text`) or several (`texts`), each scored on its own, plain or as the assistant's
    answer to `messages`."""

    model_config = ConfigDict(**STRICT, json_schema_extra=COMBINATIONS)

    model: str = Field(min_length=1)
    text: Text | None = Field(None, description="the text to score (or `texts`)")
    texts: list[Text] | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXTS,
        description="several texts, each scored on its own (at most MAX_N)",
    )
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        description="a chat the text answers: it is scored as the assistant's reply",
    )
    detail: Detail = Field(
        "summary", description="summary, or also per_token or per_word surprisal"
    )
    top_k: int = Field(
        0, ge=0, le=MAX_TOP_K, description="alternatives per position (detail per_token only)"
    )
    constraints: list[dict[str, Any]] | None = Field(
        None, description="phonological constraints whose violations to report"
    )
    vocab_unit: Literal["word", "lemma"] | None = Field(
        None, description="what vocab_n_words counts"
    )
    vocab_n_words: StrictInt | None = Field(None, ge=1, description="with vocab_lang")
    vocab_lang: str | None = Field(
        None, description="report words outside the vocab_n_words most frequent of this list"
    )

    @model_validator(mode="after")
    def _combination(self) -> ScoreRequest:
        if self.text is not None and self.texts is not None:
            raise InvalidRequest("send either text or texts, not both", param="texts")
        if self.text is None and self.texts is None:
            raise InvalidRequest(
                "Missing required parameter: 'text' (or 'texts').",
                param="text",
                code="missing_required_parameter",
            )
        if self.top_k and self.detail != "per_token":
            raise InvalidRequest(
                "top_k alternatives are reported per token: send detail 'per_token'",
                param="top_k",
            )
        return self

    def items(self) -> list[tuple[str, str]]:
        """(field, text) for each text to score, in order: the field names it in errors."""
        if self.text is not None:
            return [("text", self.text)]
        assert self.texts is not None
        return [(f"texts.{i}", text) for i, text in enumerate(self.texts)]

    def chat(self) -> list[dict[str, str]] | None:
        """`messages` as the chat template takes them, or None for plain text."""
        if self.messages is None:
            return None
        return [{"role": m.template_role(), "content": m.text()} for m in self.messages]

    def to_spec(self) -> ConstraintSpec | None:
        return constraint_spec(
            self.vocab_lang, self.vocab_n_words, self.constraints, vocab_unit=self.vocab_unit
        )


class TopToken(BaseModel):
    token: str
    id: int
    logprob: float


class TokenScore(BaseModel):
    """One scored token; `start`/`end` are its characters in the text (when the tokenizer says)."""

    token: str
    id: int
    logprob: float
    surprisal_bits: float
    start: int | None = None
    end: int | None = None
    top: list[TopToken] | None = None


class WordScore(BaseModel):
    word: str
    start: int
    end: int
    #: The sum over the word's scored tokens.
    surprisal_bits: float
    tokens: int


class TextScore(BaseModel):
    index: int
    #: Tokens scored.
    tokens: int
    #: Mean negative log-likelihood per scored token, in nats.
    loss: float
    perplexity: float
    #: Total surprisal of the scored tokens, in bits.
    surprisal_bits: float
    per_token: list[TokenScore] | None = None
    per_word: list[WordScore] | None = None
    #: The vocabulary asked for and the words of the text outside it (independent re-check).
    vocabulary: dict[str, Any] | None = None


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ScoreResponse(BaseModel):
    object: Literal["score"] = "score"
    model: str
    data: list[TextScore]
    usage: ScoreUsage
