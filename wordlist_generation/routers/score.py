"""`POST /v1/score`: how surprising each token and word of a text is to the served model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import StateDep, log_extra
from ..protocol.score import ScoreRequest
from ..services.scoring import score_texts

router = APIRouter(prefix="/v1")


@router.post("/score")
async def score(body: ScoreRequest, request: Request, state: StateDep) -> dict[str, Any]:
    """Loss, perplexity and surprisal of each text, per token or per word on request, and the
    words outside a vocabulary when one is named. No generation."""
    result = await score_texts(state, body)
    log_extra(request).update(
        model=result.model, texts=len(result.data), score_tokens=result.usage.prompt_tokens
    )
    return result.model_dump(exclude_none=True)
