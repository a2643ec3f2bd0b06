"""Word-list mode: lists -> trie -> regex -> grammar -> backends -> a compiled constraint.

    lists       Wordlist, WordlistRegistry, normalize_word: the vocabulary files
    trie        trie -> compact regex + DAWG
    grammar     GrammarOptions, compile_words, answer_regex, lark_grammar: the answer language
    automaton   AnswerAutomaton: the same language, one character at a time
    check       the independent re-check (shares nothing with the grammar)
    llguidance  lmfe   the two backends
    constraint  WordlistConstraint
    compile     WordlistHandler (spec -> constraint), prebuild, wordlist_compiler

The names of the first five are imported at once; those that need torch or a backend are loaded
on first use, so that the word-list build script and the protocol layer import no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .automaton import DEAD, AnswerAutomaton
from .check import check, finalize, releasable, split_words
from .grammar import (
    GRAMMAR_VERSION,
    CompiledWords,
    GrammarOptions,
    answer_regex,
    compile_words,
    lark_grammar,
    split_entries,
)
from .lists import (
    LANG_RE,
    EmptyWordlist,
    InvalidLanguage,
    Wordlist,
    WordlistError,
    WordlistNotFound,
    WordlistRegistry,
    capitalized,
    clean_words,
    default_wordlist_dir,
    load_wordlist,
    normalize_word,
)
from .trie import Dawg

if TYPE_CHECKING:
    from .compile import BACKENDS, WordlistHandler, prebuild, wordlist_compiler
    from .constraint import PROMPT_HINT, WordlistConstraint, prompt_hint
    from .llguidance import LlguidanceWordlist
    from .lmfe import LmfeWordlist

_LAZY = {
    "BACKENDS": "compile",
    "WordlistHandler": "compile",
    "prebuild": "compile",
    "wordlist_compiler": "compile",
    "PROMPT_HINT": "constraint",
    "WordlistConstraint": "constraint",
    "prompt_hint": "constraint",
    "LlguidanceWordlist": "llguidance",
    "LmfeWordlist": "lmfe",
}

__all__ = [
    "BACKENDS",
    "DEAD",
    "GRAMMAR_VERSION",
    "LANG_RE",
    "PROMPT_HINT",
    "AnswerAutomaton",
    "CompiledWords",
    "Dawg",
    "EmptyWordlist",
    "GrammarOptions",
    "InvalidLanguage",
    "LlguidanceWordlist",
    "LmfeWordlist",
    "Wordlist",
    "WordlistConstraint",
    "WordlistError",
    "WordlistHandler",
    "WordlistNotFound",
    "WordlistRegistry",
    "answer_regex",
    "capitalized",
    "check",
    "clean_words",
    "compile_words",
    "default_wordlist_dir",
    "finalize",
    "lark_grammar",
    "load_wordlist",
    "normalize_word",
    "prebuild",
    "prompt_hint",
    "releasable",
    "split_entries",
    "split_words",
    "wordlist_compiler",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
