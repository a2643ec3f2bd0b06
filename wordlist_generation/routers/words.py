"""`GET /v1/phonemes` and `POST /v1/words/explain`: what the web page shows about sounds and words.

Thin handlers: the request shape and its strict validation live here, the work in
`services.explain`, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import AfterValidator, Field, StrictInt

from ..constraints.spec import PhonologicalSpec, WordlistSpec
from ..deps import StateDep
from ..errors import InvalidRequest, UnknownParameter
from ..protocol import constraint_spec
from ..protocol.chat import RequestModel
from ..services import explain
from ..services.constraints import compile_spec

router = APIRouter(prefix="/v1")

#: Words explained per request: an answer of `ALLOWED_MAX_NEW_TOKENS` tokens has fewer.
MAX_WORDS = 1024
#: Query parameters every route accepts (the token, for clients that cannot send a header).
COMMON_QUERY = frozenset({"token"})


def _one_word(value: str) -> str:
    if not value.strip() or any(ch.isspace() for ch in value):
        raise ValueError("each entry must be one word, without spaces")
    return value


Word = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_one_word)]


class ExplainRequest(RequestModel):
    """Words of an answer and the vocabulary it was written in (as the chat request sent it);
    screened and strict like every request body."""

    words: list[Word] = Field(min_length=1, max_length=MAX_WORDS)
    vocab_lang: str | None = None
    vocab_n_words: StrictInt | None = Field(None, ge=1)
    vocab_unit: Literal["word", "lemma"] | None = None
    constraints: list[dict[str, Any]] | None = None


def refuse_unknown_query(request: Request, allowed: frozenset[str] = COMMON_QUERY) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise UnknownParameter(f"Unrecognized query parameter: {name}", param=name)


@router.get("/phonemes")
async def list_phonemes(request: Request, state: StateDep) -> dict[str, Any]:
    """The phoneme inventory: IPA, ASCII and ARPAbet spellings, features, example words."""
    refuse_unknown_query(request)
    state.require_engine()
    phonology = state.phonology
    assert phonology is not None
    return await asyncio.to_thread(lambda: explain.phoneme_inventory(phonology.lexicon()))


@router.post("/words/explain")
async def explain_words(body: ExplainRequest, request: Request, state: StateDep) -> dict[str, Any]:
    """Why each word is allowed: its rank in the list, or its sounds and the constraints served."""
    refuse_unknown_query(request)
    state.require_engine()
    spec = constraint_spec(
        body.vocab_lang, body.vocab_n_words, body.constraints, vocab_unit=body.vocab_unit
    )
    if spec is None:
        raise InvalidRequest(
            "say which vocabulary the words come from: vocab_lang and vocab_n_words (a word "
            "list) or constraints (sounds)",
            param="vocab_lang",
            code="missing_required_parameter",
        )
    registry = state.registry
    assert registry is not None
    # Compiling checks the vocabulary exactly as chat does (through the same bounded gate); after
    # a generation it is a cache hit.
    compiled = await compile_spec(state, spec)
    if isinstance(spec, PhonologicalSpec):
        constraint = compiled.constraint
        assert isinstance(constraint, explain.PhonologicalConstraint)
        return await asyncio.to_thread(explain.explain_sound_words, constraint, body.words)
    assert isinstance(spec, WordlistSpec)
    wordlist = await asyncio.to_thread(registry.get, spec.lang)
    lemmas = None
    if spec.unit == "lemma":
        lemmas = await asyncio.to_thread(registry.lemmas, spec.lang)
    return await asyncio.to_thread(
        explain.explain_list_words, wordlist, spec.n_words, body.words, lemmas
    )
