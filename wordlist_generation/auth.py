"""Bearer-token auth for every /v1 route, as a small ASGI middleware.

Only a hash of the secret is kept, and the comparison is constant-time. The token may come in an
`Authorization: Bearer` header or a `?token=` query parameter (for clients that cannot set headers).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Unauthorized
from .http_errors import error_response

PROTECTED_PREFIX = "/v1"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def extract_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        values = parse_qs(query).get("token")
        if values:
            return values[0]
    return None


class TokenAuthMiddleware:
    def __init__(self, app: ASGIApp, *, secret_token: str) -> None:
        self.app = app
        self._digest = _digest(secret_token)

    def is_valid(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(_digest(token), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        token = extract_token(scope)
        if not self.is_valid(token):
            message = (
                "Missing bearer token: send `Authorization: Bearer <token>` or `?token=<token>`."
                if token is None
                else "Incorrect API key provided."
            )
            err = Unauthorized(message, headers={"WWW-Authenticate": "Bearer"})
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)
