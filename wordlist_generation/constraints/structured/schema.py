"""JSON schemas as llguidance compiles them, and their rewrite under a vocabulary.

Under a word list every JSON string *value* must be a word-list answer, while keys, numbers,
booleans and null are free. The rewrite says so in the schema itself, so llguidance enforces it
with the rest of the structure:

- every plain string (no `enum`/`const`) gets a `pattern` that is the word-list answer language
  (`constraints.wordlist.grammar.answer_regex`, anchored: llguidance, like JSON Schema, searches
  a `pattern` unless it is anchored). llguidance applies it to the decoded value and writes the
  JSON escapes itself (`"` as `\\"`, a line break as `\\n`);
- a place that admits any value (`true`, `{}`, a missing `items` or `additionalProperties`)
  refers to `#/$defs/vocabulary_value`: any JSON value whose strings, at any depth, are answers;
- `enum`/`const` strings must already be list answers; a string `format` or a `pattern` of the
  client's cannot be combined with a vocabulary (an e-mail address is not made of list words).
  Both are refused with a `SchemaError` giving the path to the keyword.

Whitespace is fixed (`STYLE`): `{"a": 1, "b": [true, null]}`, one layout, so that a model cannot
spend its tokens on indentation and every answer reads the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "STYLE",
    "VALUE_DEF",
    "SchemaError",
    "any_object_schema",
    "lark_json",
    "value_pattern",
    "vocabulary_schema",
]

#: llguidance's JSON options: `{"a": 1, "b": [true, null]}`, no other whitespace.
STYLE: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

#: Where the rewrite puts "any value, strings in the vocabulary" (`#/$defs/<VALUE_DEF>`).
VALUE_DEF = "vocabulary_value"
_VALUE_REF = {"$ref": f"#/$defs/{VALUE_DEF}"}

# `not`, `if` and `contains` are left as they are: restricting the strings inside them would not
# restrict the strings of the answer (a `pattern` under `not` even frees them).
#: Keywords holding a map of name -> subschema.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
#: Keywords holding one subschema.
_SCHEMA_ONE = (
    "additionalProperties",
    "additionalItems",
    "unevaluatedItems",
    "unevaluatedProperties",
)
#: Keywords holding a list of subschemas.
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
#: A node with one of these takes its values from elsewhere: no defaults are added to it.
_DELEGATING = ("$ref", "enum", "const", "anyOf", "oneOf", "allOf")


class SchemaError(ValueError):
    """A schema that cannot be served under a vocabulary; `path` leads to the keyword at fault."""

    def __init__(self, message: str, path: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


#: The words of a string outside the vocabulary (empty when it is a list answer).
WordCheck = Callable[[str], list[str]]


def any_object_schema() -> dict[str, Any]:
    """`json_object`: any JSON object."""
    return {"type": "object"}


def lark_json(schema: dict[str, Any]) -> str:
    """An llguidance Lark grammar whose answer is JSON matching `schema`, laid out as `STYLE`."""
    options = schema.get("x-guidance")
    styled = {**schema, "x-guidance": {**(options if isinstance(options, dict) else {}), **STYLE}}
    return f"start: %json {json.dumps(styled, ensure_ascii=False)}\n"


def value_pattern(answer_regex: str) -> str:
    """The `pattern` of a string value: the whole value is one answer."""
    return f"^(?:{answer_regex})$"


def vocabulary_schema(schema: Any, answer_regex: str, words: WordCheck) -> dict[str, Any]:
    """`schema` with every string value restricted to `answer_regex` (see the module docstring).

    `words(text)` says which words of an `enum`/`const` string are outside the vocabulary.
    Raises `SchemaError` for what a vocabulary cannot serve.
    """
    pattern = value_pattern(answer_regex)
    rewriter = _Rewriter(pattern, words)
    root = rewriter.node(schema, ())
    if not isinstance(root, dict):
        root = {"allOf": [root]}
    defs = dict(root.get("$defs", {}))
    defs[VALUE_DEF] = {
        "anyOf": [
            {"type": "string", "pattern": pattern},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": _VALUE_REF},
            {"type": "object", "additionalProperties": _VALUE_REF},
        ]
    }
    return {**root, "$defs": defs}


class _Rewriter:
    def __init__(self, pattern: str, words: WordCheck) -> None:
        self.pattern = pattern
        self.words = words

    def node(self, node: Any, path: tuple[str | int, ...]) -> Any:
        if node is True:
            return dict(_VALUE_REF)
        if not isinstance(node, dict):
            return node  # `false`, or something llguidance will refuse with its own message
        self._refuse(node, path)
        out = dict(node)
        for key in _SCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                out[key] = {k: self.node(v, (*path, key, k)) for k, v in node[key].items()}
        for key in _SCHEMA_ONE:
            if key in node:
                out[key] = self.node(node[key], (*path, key))
        for key in _SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                out[key] = [self.node(v, (*path, key, i)) for i, v in enumerate(node[key])]
        items = node.get("items")
        if isinstance(items, list):
            out["items"] = [self.node(v, (*path, "items", i)) for i, v in enumerate(items)]
        elif "items" in node:
            out["items"] = self.node(items, (*path, "items"))
        if any(key in node for key in _DELEGATING):
            return out
        types = _types(node)
        if types is None and not any(key in node for key in _STRUCTURE):
            return dict(_VALUE_REF)  # `{}` or annotations only: any value
        if types is None or "string" in types:
            out["pattern"] = self.pattern
        if (types is None or "object" in types) and "additionalProperties" not in node:
            out["additionalProperties"] = dict(_VALUE_REF)
        if (types is None or "array" in types) and "items" not in node:
            out["items"] = dict(_VALUE_REF)
        return out

    def _refuse(self, node: dict[str, Any], path: tuple[str | int, ...]) -> None:
        types = _types(node)
        if "format" in node and (types is None or "string" in types):
            raise SchemaError(
                f"string format {node['format']!r} cannot be combined with a vocabulary: its "
                "values are not made of list words",
                (*path, "format"),
            )
        if "pattern" in node:
            raise SchemaError(
                "a string pattern cannot be combined with a vocabulary: string values must be "
                "made of list words",
                (*path, "pattern"),
            )
        values = node.get("enum") if isinstance(node.get("enum"), list) else []
        for key, candidates in (("enum", values), ("const", [node.get("const")])):
            for value in candidates:
                if isinstance(value, str) and (bad := self.words(value)):
                    raise SchemaError(
                        f"{key} value {value!r} is not made of vocabulary words "
                        f"({'; '.join(bad[:3])})",
                        (*path, key),
                    )


#: Keywords that give a typeless node a structure of its own (it is not "any value").
_STRUCTURE = (
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
)


def _types(node: dict[str, Any]) -> set[str] | None:
    t = node.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return None
