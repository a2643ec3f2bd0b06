"""Structured answers (`response_format`): JSON, any object or one matching a JSON schema, or a
regular expression, optionally with every JSON string value in a word list.

    schema      the schema as llguidance compiles it, rewritten under a vocabulary
    check       the independent re-check (JSON parse, basic schema validation, word re-check)
    constraint  StructuredConstraint, StructuredHandler (spec -> constraint)
"""

from .check import check_json, check_regex, string_values
from .constraint import STRUCTURED_VERSION, StructuredConstraint, StructuredHandler
from .schema import STYLE, SchemaError, lark_json, vocabulary_schema

__all__ = [
    "STRUCTURED_VERSION",
    "STYLE",
    "SchemaError",
    "StructuredConstraint",
    "StructuredHandler",
    "check_json",
    "check_regex",
    "lark_json",
    "string_values",
    "vocabulary_schema",
]
