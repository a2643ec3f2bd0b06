"""Compile the allowed vocabulary of a solved request into a llguidance Lark grammar.

The grammar is the vocabulary language and nothing more: an answer is allowed words (lowercase,
or with a capital first letter) joined by the shared separator rule,

    start: LEAD? WORD (SEP WORD)* END?

a flat repetition whose parser work per token does not grow with the length of the answer.
Required words are not in the grammar: "the answer contains these words, in any order" is
bookkeeping over the written words (`tracking`, `requirements`), and the decoding state allows
the end of the answer only once they are all there (`constraint.PhonologicalSequence.can_end`).
Encoding them in the grammar (one parametric rule per set of required words met) made llguidance's
Earley item count grow with every required word written, until it stopped with "Too many items".
"""

from __future__ import annotations

from collections.abc import Iterable

from ..separators import separator_regexes

#: The one separator rule between words (`constraints.separators`): bounded closing punctuation,
#: an optional spaced dash, one space / newline / blank line, bounded opening punctuation. Bounded
#: so decoding cannot drift into filler.
_SEPARATORS = separator_regexes()
SEP_REGEX = _SEPARATORS.gap_lark
LEAD_REGEX = _SEPARATORS.lead_lark
END_REGEX = _SEPARATORS.tail_lark


def words_regex(words: Iterable[str]) -> str:
    """A Lark regex literal matching each word, lowercase or with a capital first letter.

    Factored by first letter so the regex stays compact for tens of thousands of words.
    """
    by_first: dict[str, set[str]] = {}
    for w in words:
        by_first.setdefault(w[0], set()).add(w[1:])
    parts = []
    for first in sorted(by_first):
        rests = sorted(by_first[first], key=lambda s: (-len(s), s))
        body = "|".join(rests)
        cls = f"[{first}{first.upper()}]" if first.upper() != first else first
        parts.append(f"{cls}(?:{body})" if body else cls)
    return "/" + "|".join(parts) + "/"


def lark_grammar(words: Iterable[str]) -> str:
    """The llguidance Lark grammar of answers made of `words` (see the module docstring)."""
    lines = [
        "%llguidance {}",
        "",
        "start: LEAD? WORD (SEP WORD)* END?",
        f"WORD: {words_regex(words)}",
        f"SEP: {SEP_REGEX}",
        f"LEAD: {LEAD_REGEX}",
        f"END: {END_REGEX}",
        "",
    ]
    return "\n".join(lines)
