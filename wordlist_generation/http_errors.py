"""HTTP side of the typed errors: responses in OpenAI's shape and the app's exception handlers.

An exception no handler knows is answered by `middleware.RequestContextMiddleware` (a 500 in the
same shape, logged with its traceback and the request id)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ApiError, InvalidRequest, NotFound, validation_error


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a string holding a lone surrogate (which a client can send as a
    `\\ud800` escape, and which no UTF-8 text can hold) is written as that escape again instead
    of failing the response with a 500. The app's default response class."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, indent=None, separators=(",", ":")
            ).encode("ascii")


def error_response(exc: ApiError) -> JSONResponse:
    return SafeJSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind: type[ApiError] = NotFound if exc.status_code == 404 else InvalidRequest
        err = kind(
            str(exc.detail),
            code=None if exc.status_code != 405 else "method_not_allowed",
            headers=dict(exc.headers) if exc.headers else None,  # 405 carries `Allow`
        )
        err.status_code = exc.status_code
        return error_response(err)
