"""`POST /v1/completions`: OpenAI's legacy text completions, a thin handler over the service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..deps import StateDep, log_extra
from ..protocol.completions import CompletionRequest, TextCompletion
from ..services.completions import create_completion, prepare_completion, stream_completion
from .chat import CLIENT_CLOSED_REQUEST, leased_stream

router = APIRouter(prefix="/v1")


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, state: StateDep
) -> TextCompletion | Response:
    """A raw prompt (or a list of them) continued; with `echo` and `logprobs`, the prompt's own
    token log-probabilities (`max_tokens: 0` scores it without generating)."""
    extra = log_extra(request)
    prepared = await prepare_completion(state, body, admission=True)
    extra.update(
        model=prepared.first.model_id,
        stream=body.stream,
        mode=prepared.first.params.mode,
        prompts=len(prepared.prompts),
    )
    if prepared.first.constraint is not None:
        extra.update(vocab=prepared.first.constraint.spec.label())
    if body.stream:
        return await leased_stream(
            state, prepared.rows, lambda lease: stream_completion(state, prepared, extra, lease)
        )
    completion = await create_completion(state, prepared, request.is_disconnected, extra)
    if completion is None:  # left while queued: nobody reads an answer
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return completion
