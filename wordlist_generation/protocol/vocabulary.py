"""Request fields -> one constraint spec (or None), with errors naming the field.

Shared by chat requests, batch job parameters and OpenAI batch lines; `param_prefix` locates the
field inside an upload (`items.3.`). What the server has (languages, list sizes, the lexicon) is
checked by the compiler's handlers, not here.
"""

from __future__ import annotations

from typing import Any

from ..constraints.spec import ConstraintSpec, PhonologicalSpec, WordlistSpec
from ..errors import InvalidRequest


def constraint_spec(
    vocab_lang: str | None,
    vocab_n_words: int | None,
    constraints: Any = None,
    *,
    param_prefix: str = "",
) -> ConstraintSpec | None:
    if constraints is not None:
        return phonological_spec(constraints, vocab_lang, vocab_n_words, param_prefix=param_prefix)
    return wordlist_spec(vocab_lang, vocab_n_words, param_prefix=param_prefix)


def wordlist_spec(
    lang: str | None, n_words: int | None, *, param_prefix: str = ""
) -> WordlistSpec | None:
    if lang is None and n_words is None:
        return None
    if lang is None:
        raise InvalidRequest(
            "vocab_n_words needs vocab_lang (they come together)", param=f"{param_prefix}vocab_lang"
        )
    if n_words is None:
        raise InvalidRequest(
            "vocab_lang needs vocab_n_words (they come together)",
            param=f"{param_prefix}vocab_n_words",
        )
    return WordlistSpec(lang, n_words)


def phonological_spec(
    raw: Any, vocab_lang: str | None, vocab_n_words: int | None, *, param_prefix: str = ""
) -> PhonologicalSpec:
    from ..constraints.phonology import parse_constraints

    if vocab_lang is not None and vocab_lang != "en":
        raise InvalidRequest(
            "phonological constraints use the English pronunciation lexicon; "
            "vocab_lang must be 'en' or absent",
            param=f"{param_prefix}vocab_lang",
        )
    if vocab_n_words is not None and vocab_n_words < 1:
        raise InvalidRequest(
            "vocab_n_words must be at least 1", param=f"{param_prefix}vocab_n_words"
        )
    parsed = parse_constraints(raw, f"{param_prefix}constraints")
    return PhonologicalSpec(tuple(parsed), vocab_n_words)
