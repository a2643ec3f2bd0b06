"""The independent re-check of a structured answer.

Shares nothing with the grammar: `json.loads`, a small validator of a schema's basic structure
(`type`, `enum`, `const`, `properties`, `required`, `additionalProperties`, `items`,
`prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`, `anyOf`/`oneOf`/`allOf` and local
`$ref`s; other keywords are not re-checked), and the word-list re-check
(`constraints.wordlist.check`) of every string value, keys excepted. A regular expression is
re-checked with Python's `re`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["check_json", "check_regex", "string_values"]

#: Violations reported at most per answer (a long wrong answer need not list every word).
MAX_VIOLATIONS = 20

Path = str
WordCheck = Callable[[str], list[str]]


def check_regex(text: str, pattern: str) -> list[str]:
    return [] if re.fullmatch(pattern, text) else [f"does not match the pattern {pattern!r}"]


def check_json(text: str, schema: Any, words: WordCheck | None) -> list[str]:
    """Violations of `text` against `schema`, and with `words` the words of its string values
    outside the vocabulary (`$.title: not in the word list: 'xyz'`)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return [f"not valid JSON: {exc}"]
    except RecursionError:
        return ["not valid JSON: nested too deeply"]
    try:
        out = list(_Validator(schema).errors(value, schema, "$"))
        if words is not None:
            for path, string in string_values(value, "$"):
                out += [f"{path}: {v}" for v in words(string)]
    except RecursionError:
        return ["nested too deeply to re-check"]
    return out[:MAX_VIOLATIONS]


def string_values(value: Any, path: Path = "$") -> Iterator[tuple[Path, str]]:
    """Every string value in `value` with its path (object keys are not values)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from string_values(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_values(item, f"{path}.{key}")


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


class _Validator:
    def __init__(self, root: Any) -> None:
        self.root = root

    def errors(self, value: Any, schema: Any, path: Path) -> Iterator[str]:
        if schema is False:
            yield f"{path}: no value is allowed here"
            return
        if not isinstance(schema, dict):
            return
        if isinstance(schema.get("$ref"), str):
            target = self._resolve(schema["$ref"])
            if target is not None and target is not schema:
                yield from self.errors(value, target, path)
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not any(_TYPES.get(t, lambda _v: True)(value) for t in names):
                yield f"{path}: expected {' or '.join(map(str, names))}"
                return
        if "enum" in schema and value not in schema["enum"]:
            yield f"{path}: not one of the enum values"
        if "const" in schema and value != schema["const"]:
            yield f"{path}: not the const value"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and not any(
                not any(True for _ in self.errors(value, s, path)) for s in schema[key]
            ):
                yield f"{path}: matches none of the {key} schemas"
        for sub in schema.get("allOf", []) if isinstance(schema.get("allOf"), list) else []:
            yield from self.errors(value, sub, path)
        if isinstance(value, dict):
            yield from self._object(value, schema, path)
        elif isinstance(value, list):
            yield from self._array(value, schema, path)
        elif isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                yield f"{path}: shorter than minLength"
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                yield f"{path}: longer than maxLength"

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: Path) -> Iterator[str]:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for name in schema.get("required", []):
            if name not in value:
                yield f"{path}: missing required property {name!r}"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                yield from self.errors(item, props[name], f"{path}.{name}")
            elif extra is False and not schema.get("patternProperties"):
                yield f"{path}: unexpected property {name!r}"
            elif isinstance(extra, dict):
                yield from self.errors(item, extra, f"{path}.{name}")

    def _array(self, value: list[Any], schema: dict[str, Any], path: Path) -> Iterator[str]:
        if len(value) < schema.get("minItems", 0):
            yield f"{path}: fewer than minItems"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"{path}: more than maxItems"
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # the older tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            if sub is not None:
                yield from self.errors(item, sub, f"{path}[{i}]")

    def _resolve(self, ref: str) -> Any:
        """A local reference (`#`, `#/$defs/x`); None for any other."""
        if ref != "#" and not ref.startswith("#/"):
            return None
        node = self.root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node
