"""`GET /v1/models`, served by both the chat and the batch app."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import StateDep
from ..protocol import ModelCard, ModelList

router = APIRouter(prefix="/v1")


@router.get("/models")
async def list_models(state: StateDep) -> ModelList:
    engine = state.require_engine()
    created = int(state.started_at)
    ids = [engine.model_id, *state.settings.MODEL_ALIASES]
    return ModelList(data=[ModelCard(id=i, created=created) for i in ids])
