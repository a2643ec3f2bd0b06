"""What every JSON value a client sends must be before any model sees it.

Python's JSON parser accepts more than the JSON the OpenAI API takes: a `\\ud800` escape becomes a
lone surrogate (a string no UTF-8 text, tokenizer or log line can hold), `NaN` and `Infinity`
become floats, and nesting is bounded only by the interpreter's recursion limit. `screen` refuses
all three with a 400 naming the field, walking the value without recursion.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidRequest, printable

#: Deepest nesting of objects and arrays accepted in a request (a chat request needs 4 levels:
#: `messages.0.content.0.text`; constraints and metadata a few more).
MAX_DEPTH = 32


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(path: str, part: object) -> str:
    return f"{path}.{part}" if path else str(part)


def screen(
    value: Any, param_prefix: str = "", *, field_depth: int = 1, max_depth: int = MAX_DEPTH
) -> None:
    """Raise `InvalidRequest` naming the first field of `value` (a parsed JSON value) that holds
    a lone surrogate (in a string or a key), a non-finite number, or nests deeper than
    `max_depth`. `param_prefix` is where `value` sits in the request (`constraints`, `line[3]`).

    A too-deep error names the field, not a path of `max_depth` parts: the path down to
    `field_depth` levels (1: a request body's top-level key; 0: `value` itself is the field;
    2: a batch line's `body.tools`).
    """
    #: (value, its path, its depth, the field it belongs to once known)
    stack: list[tuple[Any, str, int, str]] = [
        (value, param_prefix, 0, param_prefix if field_depth == 0 else "")
    ]
    while stack:
        item, path, depth, field = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                raise InvalidRequest(
                    "strings must be valid Unicode text (this one holds a lone surrogate escape "
                    "such as \\ud800)",
                    param=path or None,
                    code="invalid_text",
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRequest(
                    f"{item} is not a JSON number; send a finite number",
                    param=path or None,
                )
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise InvalidRequest(
                    f"the request nests objects and arrays more than {max_depth} levels deep",
                    param=field or path or None,
                    code="too_deeply_nested",
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and not _is_text(key):
                        raise InvalidRequest(
                            "field names must be valid Unicode text: "
                            f"'{printable(key)}' holds a lone surrogate",
                            param=printable(_join(path, key)),
                            code="invalid_text",
                        )
                    child_path = _join(path, key)
                    known = field or (child_path if depth + 1 == field_depth else "")
                    stack.append((child, child_path, depth + 1, known))
            else:
                for i, child in enumerate(item):
                    child_path = _join(path, i)
                    known = field or (child_path if depth + 1 == field_depth else "")
                    stack.append((child, child_path, depth + 1, known))
