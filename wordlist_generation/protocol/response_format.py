"""`response_format` -> a `StructuredSpec` (or None for plain text), errors naming the key.

OpenAI's shapes, checked as strictly as the rest of a request:

    {"type": "text"}
    {"type": "json_object"}
    {"type": "json_schema", "json_schema": {"name", "schema", "description"?, "strict"?}}
    {"type": "regex", "pattern": "..."}                     extension

What the schema itself may hold is the compiler's business (llguidance, and the vocabulary
rewrite in `constraints.structured`), not this module's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..constraints.spec import StructuredSpec, WordlistSpec
from ..errors import InvalidRequest

__all__ = ["RESPONSE_FORMAT_TYPES", "structured_spec"]

#: The keys each `response_format` type takes.
RESPONSE_FORMAT_TYPES: dict[str, frozenset[str]] = {
    "text": frozenset({"type"}),
    "json_object": frozenset({"type"}),
    "json_schema": frozenset({"type", "json_schema"}),
    "regex": frozenset({"type", "pattern"}),
}
_JSON_SCHEMA_KEYS = frozenset({"name", "description", "schema", "strict"})
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def structured_spec(
    raw: Any, vocabulary: WordlistSpec | None, *, param_prefix: str = ""
) -> StructuredSpec | None:
    """The answer format `raw` asks for, restricted to `vocabulary` when there is one."""
    param = f"{param_prefix}response_format"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("response_format must be an object with a 'type'", param=param)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in RESPONSE_FORMAT_TYPES:
        raise InvalidRequest(
            "response_format type must be one of "
            + ", ".join(repr(t) for t in RESPONSE_FORMAT_TYPES),
            param=f"{param}.type",
        )
    _only(raw, RESPONSE_FORMAT_TYPES[kind], param, f"response_format type {kind!r}")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredSpec("json_object", vocabulary=vocabulary)
    if kind == "regex":
        return StructuredSpec("regex", _pattern(raw.get("pattern"), vocabulary, param))
    spec = raw.get("json_schema")
    where = f"{param}.json_schema"
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "response_format type 'json_schema' needs a 'json_schema' object", param=where
        )
    _only(spec, _JSON_SCHEMA_KEYS, where, "json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            "json_schema.name must be 1 to 64 letters, digits, '_' or '-'", param=f"{where}.name"
        )
    if not isinstance(spec.get("description", ""), str):
        raise InvalidRequest("must be a string", param=f"{where}.description")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise InvalidRequest("must be a boolean", param=f"{where}.strict")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "json_schema.schema must be a JSON schema (an object)", param=f"{where}.schema"
        )
    body = json.dumps(schema, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return StructuredSpec("json_schema", body, name, vocabulary)


def _only(obj: dict[str, Any], keys: frozenset[str], param: str, what: str) -> None:
    for key in obj:
        if key not in keys:
            raise InvalidRequest(f"{what} does not take {key!r}", param=f"{param}.{key}")


def _pattern(pattern: Any, vocabulary: WordlistSpec | None, param: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequest(
            "response_format type 'regex' needs a non-empty 'pattern'", param=f"{param}.pattern"
        )
    if vocabulary is not None:
        raise InvalidRequest(
            "a regex response_format cannot be combined with a vocabulary: the pattern would "
            "have to be intersected with the word-list language, which this server does not do; "
            "use json_schema, whose string values follow the vocabulary",
            param=param,
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidRequest(
            f"invalid regular expression: {exc}", param=f"{param}.pattern"
        ) from exc
    return pattern
