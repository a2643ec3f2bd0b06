"""Request fields -> one constraint spec (or None), with errors naming the field.

Shared by chat requests, batch job parameters and OpenAI batch lines; `param_prefix` locates the
field inside an upload (`items.3.`). What the server has (languages, list sizes, the lexicon) is
checked by the compiler's handlers, not here.
"""

from __future__ import annotations

from typing import Any

from ..constraints.spec import ConstraintSpec, PhonologicalSpec, WordlistSpec
from ..errors import InvalidRequest
from .response_format import structured_spec

#: What `vocab_n_words` can count (`vocab_unit`): word forms, or headwords with all their forms.
VOCAB_UNITS = ("word", "lemma")


def constraint_spec(
    vocab_lang: str | None,
    vocab_n_words: int | None,
    constraints: Any = None,
    *,
    vocab_unit: str | None = None,
    param_prefix: str = "",
    response_format: Any = None,
) -> ConstraintSpec | None:
    if vocab_unit is not None and vocab_unit not in VOCAB_UNITS:
        raise InvalidRequest(
            f"vocab_unit must be one of {', '.join(repr(u) for u in VOCAB_UNITS)}",
            param=f"{param_prefix}vocab_unit",
        )
    if constraints is not None:
        if structured_spec(response_format, None, param_prefix=param_prefix) is not None:
            raise InvalidRequest(
                "response_format applies to plain answers and word lists (vocab_lang), not to "
                "phonological constraints",
                param=f"{param_prefix}response_format",
            )
        if vocab_unit not in (None, "word"):
            raise InvalidRequest(
                "vocab_unit 'lemma' applies to word lists (vocab_lang), not to phonological "
                "constraints",
                param=f"{param_prefix}vocab_unit",
            )
        return phonological_spec(constraints, vocab_lang, vocab_n_words, param_prefix=param_prefix)
    vocabulary = wordlist_spec(vocab_lang, vocab_n_words, vocab_unit, param_prefix=param_prefix)
    structured = structured_spec(response_format, vocabulary, param_prefix=param_prefix)
    return vocabulary if structured is None else structured


def wordlist_spec(
    lang: str | None, n_words: int | None, unit: str | None = None, *, param_prefix: str = ""
) -> WordlistSpec | None:
    if lang is None and n_words is None:
        if unit is not None:
            raise InvalidRequest(
                "vocab_unit needs vocab_lang and vocab_n_words", param=f"{param_prefix}vocab_unit"
            )
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
    return WordlistSpec(lang, n_words, unit or "word")


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
