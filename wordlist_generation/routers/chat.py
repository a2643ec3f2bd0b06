"""`/v1/chat/completions`, `/v1/wordlists`: thin handlers over `completions`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .. import completions
from ..deps import StateDep, log_extra
from ..phonology import parse as parse_constraints
from ..protocol import ChatCompletion, ChatCompletionRequest, PreviewRequest

router = APIRouter(prefix="/v1")


@router.get("/wordlists")
async def list_wordlists(state: StateDep) -> dict:
    assert state.registry is not None
    return {"object": "list", "data": await asyncio.to_thread(state.registry.summary)}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep
) -> ChatCompletion | StreamingResponse:
    extra = log_extra(request)
    prepared = await completions.prepare_chat(state, body)
    extra.update(model=prepared.model_id, stream=body.stream, mode=prepared.params.mode)
    if prepared.constraint is not None:
        extra.update(vocab=f"{body.vocab_lang}:{body.vocab_n_words}")
    if body.stream:
        assert state.limiter is not None
        await state.limiter.acquire()
        return StreamingResponse(
            completions.stream_chat(state, prepared, extra),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    outputs = await state.run_generation([prepared.job()], request.is_disconnected)
    output = outputs[0]
    if output.cancelled:
        extra.update(outcome="client_disconnected")
    extra.update(completion_tokens=output.completion_tokens, gen_seconds=round(output.seconds, 3))
    return completions.build_completion(prepared, output)


@router.post("/constraints/preview")
async def preview_constraints(body: PreviewRequest, state: StateDep) -> dict:
    """Survival, domain sizes and top candidate pairs/sets for a constraint list; no generation."""
    state.require_engine()
    assert state.phonology is not None
    constraints = parse_constraints(body.constraints)
    return await asyncio.to_thread(
        state.phonology.preview, constraints, body.vocab_n_words, body.top_k
    )
