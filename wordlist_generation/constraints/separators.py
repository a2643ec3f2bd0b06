"""The one separator rule: the punctuation and whitespace allowed around and between words.

Data (the character sets) plus one function that renders the rule as regular expressions, in a
syntax valid both for Python's `re` and for Rust's `regex-syntax` (which llguidance uses), so the
same fragments serve tests, llguidance Lark grammars (`/regex/` terminals) and any other grammar.

    lead  = (OPEN " "?){1,max_opening}                    before the first word
    gap   = close? (" " DASH)? BREAK lead?                between two words
    tail  = close                                         after the last word
    close = (" "? CLOSE){1,max_closing}
    BREAK = " " | "\\n" | "\\n\\n"

`OPEN`, `CLOSE` and `DASH` are `OPENING`, `CLOSING` and `DASHES` below; whether a space may stand
before closing punctuation, whether line and paragraph breaks are allowed and the run bounds are
parameters (`separator_regexes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CLOSE_SET",
    "CLOSING",
    "DASHES",
    "DASH_SET",
    "NON_TERMINAL",
    "OPENING",
    "OPEN_SET",
    "PUNCT_SET",
    "SeparatorRegexes",
    "char_class",
    "escape",
    "separator_regexes",
]

#: Punctuation that may open a word (Spanish inverted marks, brackets, opening quotes, dialogue
#: dashes). `"` and `“` are both opening and closing quotes (`„…“` in German, `“…”` in English).
OPENING = '¿¡([«"“„—–'
#: Punctuation that may follow a word.
CLOSING = '.,;:!?…)]»"”“'
#: Dashes, allowed between words only with a space before them (`palabra - palabra`).
DASHES = "-–—"

OPEN_SET = frozenset(OPENING)
CLOSE_SET = frozenset(CLOSING)
DASH_SET = frozenset(DASHES)
#: Every punctuation character of the rule: a chunk made only of these holds no word.
PUNCT_SET = OPEN_SET | CLOSE_SET | DASH_SET
#: Characters that do not make a chunk (a run without whitespace) a possible end of an answer:
#: they announce a word that has not come yet.
NON_TERMINAL = OPEN_SET | DASH_SET

#: Regex metacharacters of both Python's `re` and Rust's `regex-syntax`; escaping exactly these
#: keeps an expression valid in both (and `/` keeps it valid inside a Lark `/regex/`).
_META = frozenset("\\.+*?()|[]{}^$#&-~/")


def escape(ch: str) -> str:
    """One character as a regex atom."""
    if ch in _META:
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    return ch


def char_class(chars: Iterable[str]) -> str:
    """A regex character class of `chars` (sorted, so equal sets render equally)."""
    return "[" + "".join(escape(c) for c in sorted(set(chars))) + "]"


@dataclass(frozen=True)
class SeparatorRegexes:
    """The separator rule as three regular expressions (see the module docstring)."""

    #: Opening punctuation before the first word.
    lead: str
    #: Everything between two words: closing punctuation, a spaced dash, one break, opening
    #: punctuation.
    gap: str
    #: Closing (ending) punctuation after the last word.
    tail: str

    @staticmethod
    def lark(regex: str) -> str:
        """`regex` as an llguidance Lark `/regex/` terminal body."""
        return f"/{regex}/"

    @property
    def lead_lark(self) -> str:
        return self.lark(self.lead)

    @property
    def gap_lark(self) -> str:
        return self.lark(self.gap)

    @property
    def tail_lark(self) -> str:
        return self.lark(self.tail)


def separator_regexes(
    *,
    max_opening: int = 2,
    max_closing: int = 4,
    allow_newlines: bool = True,
    allow_paragraphs: bool = True,
    space_before_closing: bool = True,
) -> SeparatorRegexes:
    """The rule with its knobs: run bounds, line breaks (`\\n`), paragraph breaks (`\\n\\n`, only
    with line breaks) and a space before closing punctuation (`Quoi ?`, `« oui »`)."""
    if max_opening < 1 or max_closing < 1:
        raise ValueError("max_opening and max_closing must be >= 1")
    opening = char_class(OPENING)
    closing = char_class(CLOSING)
    if allow_newlines:
        brk = "(?: |\\n\\n?)" if allow_paragraphs else "(?: |\\n)"
    else:
        brk = " "
    open_run = f"(?:{opening} ?){{1,{max_opening}}}"
    if space_before_closing:
        close_run = f"(?: ?{closing}){{1,{max_closing}}}"
    else:
        close_run = f"{closing}{{1,{max_closing}}}"
    return SeparatorRegexes(
        lead=open_run,
        gap=f"(?:{close_run})?(?: {char_class(DASHES)})?{brk}(?:{open_run})?",
        tail=close_run,
    )
