"""Request ids, one structured log line per request, and a request-body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RequestTooLarge
from .http_errors import error_response

log = logging.getLogger("wordlist_generation.access")

_TOKEN_IN_QUERY = re.compile(r"(^|[?&])token=[^&\s]*")


def redact_query(query: str) -> str:
    """Never log a secret that came in the URL."""
    return _TOKEN_IN_QUERY.sub(r"\1token=***", query)


class RequestContextMiddleware:
    """Assigns `x-request-id` (or keeps a sane client one), logs outcome and timings once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", incoming) else ""
        request_id = request_id or f"req-{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        first_byte: float | None = None
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal first_byte, status
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", request_id.encode())
                ]
            await send(message)

        outcome = "ok"
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            outcome = f"exception:{type(exc).__name__}"
            raise
        finally:
            extra = scope["state"].get("log_extra", {})
            record = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "query": redact_query(scope.get("query_string", b"").decode("latin-1")) or None,
                "status": status,
                "outcome": extra.pop("outcome", None) or (outcome if status < 400 else "error"),
                "ttfb_ms": round((first_byte - start) * 1000, 1) if first_byte else None,
                "total_ms": round((time.perf_counter() - start) * 1000, 1),
                **extra,
            }
            log.info(json.dumps(record, ensure_ascii=False, default=str))


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` on the given path prefixes (413), before parsing them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        err = RequestTooLarge(
            f"request body is larger than the limit of {self.max_bytes} bytes", param=None
        )
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(err)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await error_response(err)(scope, receive, send)


class _TooLarge(Exception):
    pass
