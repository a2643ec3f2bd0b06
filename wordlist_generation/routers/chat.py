"""`/v1/chat/completions`, `/v1/wordlists`, `/v1/constraints/preview`: thin handlers over services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..deps import StateDep, log_extra
from ..protocol import ChatCompletion, ChatCompletionRequest, PreviewRequest
from ..protocol.vocabulary import phonological_spec
from ..services.chat import build_completion, prepare_chat
from ..services.limiter import SlotLease
from ..services.streaming import stream_chat

router = APIRouter(prefix="/v1")

#: The status logged for a client that left before its answer (nginx's convention); never sent.
CLIENT_CLOSED_REQUEST = 499


class LeasedStreamingResponse(StreamingResponse):
    """A stream that gives its limiter slot back however the response ends, including when the
    client leaves before the body is first iterated (then the generator never runs at all)."""

    def __init__(self, content, lease: SlotLease, **kwargs) -> None:  # noqa: ANN001
        super().__init__(content, **kwargs)
        self.lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # runs the generator's cleanup if it started
            self.lease.release()  # a no-op once the generation holds the slot


async def leased_stream(
    state: StateDep, rows: int, events: Callable[[SlotLease], AsyncIterator[str]]
) -> LeasedStreamingResponse:
    """An SSE response over `events(lease)`, holding `rows` of the limiter until it ends."""
    assert state.limiter is not None
    lease = SlotLease(state.limiter, await state.limiter.acquire(rows))
    return LeasedStreamingResponse(
        events(lease),
        lease,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/wordlists")
async def list_wordlists(state: StateDep) -> dict:
    state.require_engine()
    assert state.registry is not None
    return {"object": "list", "data": await asyncio.to_thread(state.registry.summary)}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep
) -> ChatCompletion | Response:
    extra = log_extra(request)
    prepared = await prepare_chat(state, body, admission=True)
    extra.update(model=prepared.model_id, stream=body.stream, mode=prepared.params.mode)
    if prepared.constraint is not None:
        extra.update(vocab=prepared.constraint.spec.label())
    if body.stream:
        return await leased_stream(
            state, prepared.rows, lambda lease: stream_chat(state, prepared, extra, lease)
        )
    outputs = await state.run_generation([prepared.job()], request.is_disconnected)
    output = outputs[0]
    if output.cancelled:
        extra.update(outcome="client_disconnected")
        if not output.choices:  # left while queued: nobody reads an answer
            return Response(status_code=CLIENT_CLOSED_REQUEST)
    extra.update(completion_tokens=output.completion_tokens, gen_seconds=round(output.seconds, 3))
    return build_completion(prepared, output)


@router.post("/constraints/preview")
async def preview_constraints(body: PreviewRequest, state: StateDep) -> dict:
    """Survival, domain sizes and top candidate pairs/sets for a constraint list; no generation."""
    state.require_engine()
    assert state.phonology is not None and state.gate is not None
    spec = phonological_spec(body.constraints, body.vocab_lang, body.vocab_n_words)
    return await state.gate.run(
        state.phonology.preview, list(spec.constraints), body.vocab_n_words, body.top_k
    )
