"""The OpenAPI document as the API really answers, so that generated clients and schemathesis can
hold the server to it.

FastAPI's own document describes a 422 `HTTPValidationError` this server never sends (validation
errors are 400s in OpenAI's shape) and types handlers that return dicts as `{}`. Here every
operation lists the statuses it can answer, errors with the one error model, and its success body
with the model the handler's dict follows. An operation missing from `OPERATIONS` (a route added
later) still gets the error model and loses the false 422.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from .protocol import ChatCompletion, ModelList
from .protocol.completions import TextCompletion
from .protocol.score import ScoreResponse
from .routers.batch_models import (
    BatchList,
    BatchObject,
    FileDeleted,
    FileList,
    FileObject,
    JobAccepted,
    JobList,
    JobObject,
)


class ErrorDetail(BaseModel):
    """OpenAI's error object; some errors add fields (`line`, `index`, `domain_sizes`)."""

    model_config = ConfigDict(extra="allow")
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["loading", "ready", "error"]
    model: str | None
    ready_seconds: float | None
    error: str | None
    #: Rows decoding and requests waiting (once the app has started).
    running: int | None = None
    waiting: int | None = None


class WordlistInfo(BaseModel):
    lang: str
    file: str
    n_words: int
    sha256: str | None
    error: str | None = None


class WordlistList(BaseModel):
    object: Literal["list"]
    data: list[WordlistInfo]


MODELS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    Health,
    ModelList,
    WordlistList,
    ChatCompletion,
    TextCompletion,
    ScoreResponse,
    JobAccepted,
    JobObject,
    JobList,
    BatchObject,
    BatchList,
    FileObject,
    FileList,
    FileDeleted,
)

ERRORS: dict[int, str] = {
    400: "Invalid request: the error names the field at fault (`param`).",
    401: "Missing or wrong token.",
    404: "Unknown model, word list, job, file or batch.",
    409: "The job or batch is not in a state that allows this.",
    413: "The body (or the uploaded file) is over the limit.",
    422: "The constraints can never be satisfied: the error says which one emptied what.",
    429: "Busy: the queue is full (see `Retry-After`).",
    500: "Internal error (never with details).",
    503: "The model is still loading, or failed to (see `Retry-After`).",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


OBJECT: dict[str, Any] = {"type": "object"}
SSE: dict[str, Any] = {"text/event-stream": {"schema": {"type": "string"}}}
JSONL: dict[str, Any] = {"application/jsonl": {"schema": {"type": "string"}}}

#: (method, path) -> (success status, success content, error statuses).
OPERATIONS: dict[tuple[str, str], tuple[str, dict[str, Any], tuple[int, ...]]] = {
    ("get", "/health"): ("200", _json(_ref(Health)), ()),
    ("get", "/v1/models"): ("200", _json(_ref(ModelList)), (401, 503)),
    ("get", "/v1/wordlists"): ("200", _json(_ref(WordlistList)), (401, 503)),
    ("post", "/v1/chat/completions"): (
        "200",
        _json(_ref(ChatCompletion)) | SSE,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    ("post", "/v1/completions"): (
        "200",
        _json(_ref(TextCompletion)) | SSE,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    ("post", "/v1/score"): (
        "200",
        _json(_ref(ScoreResponse)),
        (400, 401, 404, 413, 422, 429, 503),
    ),
    ("post", "/v1/constraints/preview"): ("200", _json(OBJECT), (400, 401, 413, 422, 429, 503)),
    ("get", "/v1/phonemes"): ("200", _json(OBJECT), (400, 401, 503)),
    ("post", "/v1/words/explain"): ("200", _json(OBJECT), (400, 401, 404, 413, 422, 503)),
    ("post", "/v1/batch/jobs"): (
        "202",
        _json(_ref(JobAccepted)),
        (400, 401, 404, 413, 422, 429, 503),
    ),
    ("get", "/v1/batch/jobs"): ("200", _json(_ref(JobList)), (400, 401, 503)),
    ("get", "/v1/batch/jobs/{job_id}"): ("200", _json(_ref(JobObject)), (401, 404, 503)),
    ("get", "/v1/batch/jobs/{job_id}/results"): (
        "200",
        _json({"type": "array", "items": OBJECT}),
        (401, 404, 409, 503),
    ),
    ("post", "/v1/batch/jobs/{job_id}/cancel"): (
        "200",
        _json(_ref(JobObject)),
        (401, 404, 409, 503),
    ),
    ("post", "/v1/files"): ("200", _json(_ref(FileObject)), (400, 401, 413, 503)),
    ("get", "/v1/files"): ("200", _json(_ref(FileList)), (400, 401, 503)),
    ("get", "/v1/files/{file_id}"): ("200", _json(_ref(FileObject)), (401, 404, 503)),
    ("get", "/v1/files/{file_id}/content"): ("200", JSONL, (401, 404, 503)),
    ("delete", "/v1/files/{file_id}"): ("200", _json(_ref(FileDeleted)), (401, 404, 503)),
    ("post", "/v1/batches"): (
        "200",
        _json(_ref(BatchObject)),
        (400, 401, 404, 413, 422, 429, 503),
    ),
    ("get", "/v1/batches"): ("200", _json(_ref(BatchList)), (400, 401, 503)),
    ("get", "/v1/batches/{batch_id}"): ("200", _json(_ref(BatchObject)), (401, 404, 503)),
    ("post", "/v1/batches/{batch_id}/cancel"): (
        "200",
        _json(_ref(BatchObject)),
        (401, 404, 409, 503),
    ),
}

#: Errors of an operation `OPERATIONS` does not know.
DEFAULT_ERRORS = (400, 401, 404, 413, 422, 429, 503)

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "token": {"type": "apiKey", "in": "query", "name": "token"},
}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": ERRORS[status], "content": _json(_ref(ErrorResponse))}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return response


def _describe(path: str, method: str, operation: dict[str, Any]) -> None:
    known = OPERATIONS.get((method, path))
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    if known is None:
        errors = DEFAULT_ERRORS if path.startswith("/v1") else ()
    else:
        status, content, errors = known
        for other in [s for s in responses if s.startswith("2") and s != status]:
            responses.pop(other)
        success = responses.setdefault(status, {"description": "Successful Response"})
        success["content"] = content
    for status_code in errors:
        responses[str(status_code)] = _error_response(status_code)
    if path == "/health":
        responses["503"] = {"description": "Start-up failed", "content": _json(_ref(Health))}
    if path.startswith("/v1"):
        operation["security"] = [{"bearer": []}, {"token": []}]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _, definitions = models_json_schema(
        [(m, "serialization") for m in MODELS], ref_template="#/components/schemas/{model}"
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            _describe(path, method, operation)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve `build_openapi(app)` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
