"""`Annotated` dependency aliases that keep handler signatures short."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .services.state import ServerState
from .settings import Settings


def get_state(request: Request) -> ServerState:
    return request.app.state.server


def get_settings(request: Request) -> Settings:
    return request.app.state.server.settings


StateDep = Annotated[ServerState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def log_extra(request: Request) -> dict:
    """Fields added to this request's single access-log line."""
    return request.scope.setdefault("state", {}).setdefault("log_extra", {})
