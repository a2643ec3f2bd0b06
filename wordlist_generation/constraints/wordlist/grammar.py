"""Compiling a word list into the grammar of a whole answer.

The vocabulary restriction is enforced token by token during decoding, so it has to be a formal
language over characters. This module defines that language once and builds its forms from one
trie of the list (`trie`):

- a compact regular expression (`answer_regex`, `lark_grammar`): trie -> alternations factored by
  shared suffix (`c[ao]sas?`), character classes, optional groups. This is the documented
  mechanism, and the form llguidance consumes;
- a character automaton (`automaton.AnswerAutomaton`): the same trie, minimized into a DAWG,
  walked one character at a time. lm-format-enforcer consumes it as a `CharacterLevelParser` (its
  own regex FSM needs about a minute for 10,000 words), and the llguidance backend uses its states
  as exact cache keys for token masks that repeat.

The independent re-check (`check`) deliberately uses neither the trie nor the regex.

## What the grammar allows

An answer is a sequence of *words* separated by *gaps*, optionally opened by *lead* punctuation
and closed by *tail* punctuation (the separator rule itself is `constraints.separators`):

    answer  = lead? word (gap word)* tail?
    word    = clitic* entry                      -- no separator inside a word
    lead    = (OPEN " "?){1,2}
    gap     = close? (" " DASH)? BREAK lead?
    tail    = close
    close   = (" "? CLOSE){1,4}
    BREAK   = " " | "\\n" | "\\n\\n"

- `entry` is one of the first N lines of the list, or its *capitalized form*: the first character
  upper-cased when that gives a single, different character (`hola` -> `Hola`, `i` -> `I`,
  `haus` -> `Haus`). Only the first character: `HOLA` and `hOla` are not allowed. The lowercase
  word must itself be in the list.
- `clitic` is a list entry ending in an apostrophe (`l'`, `qu'`, `dell'`), written directly
  before the next word: `l'homme`, `qu'il`, `L'Italia`, `dell'anno`. A clitic can never end the
  answer or stand before a separator. An entry ending in `'` is a clitic in every language.
- Characters inside an entry (`'`, `-`, `.`, `·` in `don't`, `e-mail`, `ee.uu`) are allowed only
  as part of that entry: `hola.adiós`, `casa-perro` and `don'` are not words.
- `OPEN` = `¿ ¡ ( [ « " “ „ — –` (before a word), `CLOSE` = `. , ; : ! ? … ) ] » " ” “`
  (after a word), `DASH` = `- – —` (only as a spaced dash: `word - word`, `word, — word`).
  Single quotes are not punctuation: `'` only exists inside entries (`don't`, `l'`), and `‘ ’`
  would be read as apostrophes by any word splitter (the lists fold `’` into `'`).
  Runs are bounded: at most 2 opening and 4 closing characters (`...?`, `?!»`, `."`).
- A space may stand before each closing and after each opening punctuation character (French
  typography: `« Bonjour ! »`, `Quoi ?`), still within the run bounds.
- Whitespace is one space, one line break or one paragraph break (`\\n\\n`) between words, never
  more, never a tab, never at the start or the end of the answer.
- No digits, symbols (`# * / % & + = @ _ < >`), emoji, list markers (`1.`, `- item`, `* item`)
  or markup: they are not words and not in the punctuation sets.
- The answer may end (end-of-sequence is allowed) only after a complete word or after closing
  punctuation, never inside a word, after a clitic, after whitespace or after opening
  punctuation.

`GrammarOptions` can switch off capitalized forms and line breaks and change the run bounds; the
defaults are the description above.

List entries without any letter, or containing whitespace or control characters, are ignored
(the shipped lists, cleaned by `normalize_word`, contain none).
"""

from __future__ import annotations

import gc
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..separators import SeparatorRegexes, separator_regexes
from .trie import Dawg, build_trie, trie_regex

__all__ = [
    "GRAMMAR_VERSION",
    "CompiledWords",
    "GrammarOptions",
    "answer_regex",
    "compile_words",
    "lark_grammar",
    "split_entries",
]

#: Bump whenever the language defined here changes: it is part of every compiled-constraint key.
GRAMMAR_VERSION = 1


@dataclass(frozen=True)
class GrammarOptions:
    """Knobs of the answer grammar; hashable, part of the compiled-constraint cache key."""

    #: Allow the capitalized form of every entry (`Hola`, `I`, German nouns).
    allow_capitalized: bool = True
    #: Allow a line break between words (otherwise a single space only).
    allow_newlines: bool = True
    #: Allow a paragraph break (`\n\n`) between words (needs `allow_newlines`).
    allow_paragraphs: bool = True
    #: Longest run of opening punctuation before a word (`¿¡`, `«"`).
    max_opening: int = 2
    #: Longest run of closing punctuation after a word (`...?`, `?!»`).
    max_closing: int = 4
    #: Allow one space before closing punctuation (`Quoi ?`, `« oui »`).
    space_before_closing: bool = True

    def __post_init__(self) -> None:
        if self.max_opening < 1 or self.max_closing < 1:
            raise ValueError("max_opening and max_closing must be >= 1")

    def separators(self) -> SeparatorRegexes:
        """The separator rule with these knobs."""
        return separator_regexes(
            max_opening=self.max_opening,
            max_closing=self.max_closing,
            allow_newlines=self.allow_newlines,
            allow_paragraphs=self.allow_paragraphs,
            space_before_closing=self.space_before_closing,
        )


def _usable(entry: str) -> bool:
    if entry.isalpha():  # the common case, decided without a per-character loop
        return True
    if not entry or not any(ch.isalpha() for ch in entry):
        return False
    return not any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in entry)


def split_entries(words: Iterable[str]) -> tuple[list[str], list[str]]:
    """(full words, clitics) of a list, unusable entries dropped, order kept, duplicates removed.

    A clitic is an entry ending in an apostrophe; it must be followed directly by another word.
    """
    seen: set[str] = set()
    full: list[str] = []
    clitics: list[str] = []
    for w in words:
        if w in seen or not _usable(w):
            continue
        seen.add(w)
        (clitics if w.endswith("'") and len(w) > 1 else full).append(w)
    return full, clitics


@dataclass(frozen=True)
class CompiledWords:
    """Everything compiled from one list: the regexes of full words and clitics and their DAWGs."""

    full_regex: str
    clitic_regex: str | None
    full: Dawg
    clitic: Dawg | None
    options: GrammarOptions
    #: The usable entries, in list order (full words, then clitics).
    full_words: tuple[str, ...]
    clitic_words: tuple[str, ...]

    @property
    def n_full(self) -> int:
        return len(self.full_words)

    @property
    def n_clitics(self) -> int:
        return len(self.clitic_words)


def compile_words(
    words: Sequence[str], options: GrammarOptions = GrammarOptions()
) -> CompiledWords:
    """Trie -> regex + DAWG for the full words and the clitics of `words`.

    The garbage collector is paused meanwhile: the trie is hundreds of thousands of small dicts,
    and collections triggered by their allocation would double the time for nothing.
    """
    full, clitics = split_entries(words)
    if not full:
        raise ValueError("the word list has no usable word")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        full_rx, full_dawg = trie_regex(build_trie(full, options.allow_capitalized))
        clitic_rx = clitic_dawg = None
        if clitics:
            clitic_rx, clitic_dawg = trie_regex(build_trie(clitics, options.allow_capitalized))
    finally:
        if was_enabled:
            gc.enable()
    return CompiledWords(
        full_regex=full_rx,
        clitic_regex=clitic_rx,
        full=full_dawg,
        clitic=clitic_dawg,
        options=options,
        full_words=tuple(full),
        clitic_words=tuple(clitics),
    )


def answer_regex(cw: CompiledWords) -> str:
    """The whole answer as one regular expression (valid for Python's `re` and for llguidance)."""
    p = cw.options.separators()
    word = f"(?:{cw.full_regex})"
    if cw.clitic_regex is not None:
        word = f"(?:{cw.clitic_regex})*" + word
    return f"(?:{p.lead})?{word}(?:{p.gap}{word})*(?:{p.tail})?"


def lark_grammar(cw: CompiledWords) -> str:
    """The same language as `answer_regex`, as an llguidance Lark grammar.

    One terminal (`ANSWER`) is the whole answer, so lexing is the regular expression itself (no
    lexer/parser interplay to reason about); naming the word regex once and referring to it twice
    halves what llguidance parses compared with the flat regex.

    `no_forcing` keeps every valid token in the masks: by default, where the grammar forces the
    next bytes (`mañ` can only go on as `ana`), llguidance allows only the tokenizer's own
    tokenization of them (`ana`, not `a` or `an`). That would make its masks differ from
    lm-format-enforcer's and push a model towards tokens it may find unlikely.
    """
    p = cw.options.separators()
    lines = [
        '%llguidance {"no_forcing": true}',
        "start: ANSWER",
        "ANSWER: LEAD? WORD (GAP WORD)* TAIL?",
        "WORD: CLITIC* FULL" if cw.clitic_regex is not None else "WORD: FULL",
        f"FULL: /{cw.full_regex}/",
    ]
    if cw.clitic_regex is not None:
        lines.append(f"CLITIC: /{cw.clitic_regex}/")
    lines += [f"LEAD: {p.lead_lark}", f"GAP: {p.gap_lark}", f"TAIL: {p.tail_lark}"]
    return "\n".join(lines) + "\n"
