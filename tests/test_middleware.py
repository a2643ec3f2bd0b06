"""Query redaction for every spelling of a secret, the status logged for an unhandled error, and
405 with `Allow`."""

from __future__ import annotations

import json
import logging
from urllib.parse import unquote_plus

import pytest
from fakes import AUTH

from wordlist_generation.middleware import redact_query, redact_target

SECRET = "s3cr3t-value"
PCT = "".join(f"%{b:02X}" for b in SECRET.encode())


@pytest.mark.parametrize(
    "query",
    [
        f"token={SECRET}",
        f"%74oken={SECRET}",
        f"tok%65n={SECRET}",
        f"%74%6f%6b%65%6e={SECRET}",
        f"token={PCT}",
        f"TOKEN={SECRET}",
        f"token+={SECRET}",
        f"token%20={SECRET}",
        f"token%3D{SECRET}",
        f"tok%2565n={SECRET}",
        f"x=1;token={SECRET}",
        f"token=a&token={SECRET}",
        f"x=1#token={SECRET}",
        f"access_token={SECRET}",
    ],
)
def test_a_secret_is_redacted_in_any_spelling(query: str) -> None:
    redacted = redact_query(query)
    for _ in range(3):
        assert SECRET not in redacted
        redacted = unquote_plus(redacted)
    assert SECRET not in redacted


def test_other_parameters_are_kept() -> None:
    assert redact_query("limit=5&after=file-1") == "limit=5&after=file-1"
    assert redact_query(f"x=1&token={SECRET}") == "x=1&token=***"
    assert redact_target(f"/v1/models?token={SECRET}") == "/v1/models?token=***"
    assert redact_target("/v1/models") == "/v1/models"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unhandled_error_is_a_500_in_the_error_shape_and_logged_as_500(make_client):
    client, _ = make_client()

    async def boom() -> None:
        raise RuntimeError("secret detail")

    client.app.add_api_route("/v1/boom", boom)
    handler = Lines()
    access = logging.getLogger("wordlist_generation.access")
    access.addHandler(handler)
    try:
        r = client.get("/v1/boom", headers={**AUTH, "x-request-id": "boom-1"})
    finally:
        access.removeHandler(handler)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "generation_failed"
    assert "secret detail" not in r.text
    assert r.headers["x-request-id"] == "boom-1"
    lines = [json.loads(x.getMessage()) for x in handler.records]
    assert [(line["request_id"], line["status"]) for line in lines] == [("boom-1", 500)]
    assert lines[0]["outcome"] == "exception:RuntimeError"


def test_an_unknown_method_is_405_with_allow(make_client):
    client, _ = make_client()
    r = client.request("TRACE", "/v1/models", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.request("DELETE", "/health")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
