"""Request ids, one structured log line per request, and a request-body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import GenerationFailed, RequestTooLarge
from .http_errors import error_response

log = logging.getLogger("wordlist_generation.access")
errors_log = logging.getLogger("wordlist_generation.errors")

#: Separators of query parameters as any parser may read them (`;` included) and a fragment.
_QUERY_SEPARATORS = re.compile(r"([&;#])")
#: A parameter whose decoded name contains one of these never has its value logged.
SECRET_NAME_PARTS = ("token", "key", "secret", "password", "auth")
REDACTED = "***"


def _decoded_name(raw: str) -> str:
    """A parameter name as the most lenient parser could read it: percent-decoded until stable
    (double encoding), `+` as space, then case and whitespace dropped."""
    name = raw
    for _ in range(4):
        decoded = unquote_plus(name, errors="replace")
        if decoded == name:
            break
        name = decoded
    return "".join(name.split()).lower()


def redact_query(query: str) -> str:
    """The query string with the value of every parameter whose name could mean a secret
    replaced by `***`, judged on the decoded name (`%74oken`, `TOKEN`, `tok%2565n`, `token+`)
    and with `&`, `;` and `#` all taken as separators. A part whose decoded name holds an `=`
    (`token%3D<secret>`) is redacted whole. Never log a secret that came in the URL."""
    parts = _QUERY_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        raw_name, eq, _ = parts[i].partition("=")
        name = _decoded_name(raw_name)
        if any(word in name for word in SECRET_NAME_PARTS):
            parts[i] = f"{raw_name}={REDACTED}" if eq and "=" not in name else REDACTED
    return "".join(parts)


def redact_target(target: str) -> str:
    """A request target (`/path?query`) with its query redacted (`redact_query`)."""
    path, sep, query = target.partition("?")
    return f"{path}{sep}{redact_query(query)}" if sep else target


class RequestContextMiddleware:
    """Assigns `x-request-id` (or keeps a sane client one), logs outcome and timings once.

    Outermost of the app's own middleware, so an exception nothing else handled ends here: the
    client gets the OpenAI-shaped 500 from this middleware (never a traceback), and the log
    line says 500, the status the client got.
    """

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
        except Exception as exc:
            outcome = f"exception:{type(exc).__name__}"
            if first_byte is not None:
                raise  # the response has started: the server can only close the connection
            errors_log.exception(
                "unhandled error on %s %s (%s)", scope.get("method"), scope.get("path"), request_id
            )
            failed = GenerationFailed("internal error; see the server log")
            await error_response(failed)(scope, receive, send_wrapper)
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
                "outcome": extra.pop("outcome", None)
                or (outcome if status < 400 or outcome != "ok" else "error"),
                "ttfb_ms": round((first_byte - start) * 1000, 1) if first_byte else None,
                "total_ms": round((time.perf_counter() - start) * 1000, 1),
                **extra,
            }
            log.info(json.dumps(record, ensure_ascii=False, default=str))


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` on the given path prefixes (413), before parsing them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        prefixes: tuple[str, ...],
        param: str | None = None,
    ) -> None:
        """`param` is the field a refusal names (`file` for uploads; None for a JSON body)."""
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes
        self.param = param

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        err = RequestTooLarge(
            f"request body is larger than the limit of {self.max_bytes} bytes", param=self.param
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
