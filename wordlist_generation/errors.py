"""Typed domain errors, each carrying the request field at fault (`param`).

`{"error": {"message", "type", "param", "code"}}`; one exception class per kind of failure, never a
regex over exception text, and never `str(exc)` of an unexpected error sent to a client. No HTTP
framework here: engine, constraints and batch raise these; `http_errors` turns them into responses.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": printable(self.message),
            "type": self.error_type,
            "param": None if self.param is None else printable(self.param),
            "code": self.code,
        }
        err.update(self.extra)
        return {"error": err}


def printable(text: str) -> str:
    """`text` with any lone surrogate written as its escape (`\\ud800`): a message or a field
    name that quotes a client's invalid string must still encode as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidRequest(ApiError):
    status_code = 400
    code = "invalid_value"


class UnsupportedParameter(ApiError):
    status_code = 400
    code = "unsupported_parameter"


class UnknownParameter(ApiError):
    status_code = 400
    code = "unknown_parameter"


class ContextLengthExceeded(ApiError):
    status_code = 400
    code = "context_length_exceeded"


class InvalidConstraint(ApiError):
    status_code = 400
    code = "invalid_constraint"


class UnsatisfiableConstraint(ApiError):
    status_code = 422
    code = "unsatisfiable_constraint"


class Unauthorized(ApiError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ApiError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class WordlistNotFound(NotFound):
    code = "wordlist_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class RequestTooLarge(ApiError):
    status_code = 413
    code = "request_too_large"


class Overloaded(ApiError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(ApiError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


class UpstreamUnavailable(ServiceUnavailable):
    """No upstream engine server can take the request (all down, or the one streaming died)."""

    code = "upstream_unavailable"


class BadGateway(ApiError):
    """An upstream engine server answered in a way the gateway cannot use (refused a grammar it
    was sent, broke its stream, sent what is not an answer)."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"


class GatewayTimeout(ApiError):
    """An upstream engine server did not answer (or stopped streaming) within its timeout."""

    status_code = 504
    error_type = "server_error"
    code = "upstream_timeout"


class GenerationFailed(ApiError):
    status_code = 500
    error_type = "server_error"
    code = "generation_failed"


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # Drop pydantic's union-branch tags such as "str" / "list[...]" / function-after[...].
    parts = [p for p in parts if not (p[:1].islower() and "[" in p) and p not in ("str", "int")]
    return ".".join(parts) or None


def validation_error(errors: list[Any]) -> ApiError:
    """Pydantic's (or FastAPI's 422) error list becomes a 400 naming the first bad field, as the
    OpenAI API does."""
    if not errors:
        return InvalidRequest("invalid request")
    first = errors[0]
    kind = first.get("type", "")
    loc = first.get("loc", ())
    param = _loc_to_param(loc)
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request: "
            f"{first.get('ctx', {}).get('error', 'invalid JSON')}",
            param=None,
            code="invalid_json",
        )
    if kind == "extra_forbidden":
        return UnknownParameter(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        if param is None:
            return InvalidRequest("the request body is missing", code="missing_body")
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return InvalidRequest(f"Invalid value for '{param}': {msg}", param=param)
