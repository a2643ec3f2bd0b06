"""`WordlistConstraint`: a word list compiled for one tokenizer and backend (shared, cached)."""

from __future__ import annotations

import threading
import time
from types import MappingProxyType
from typing import Any, Protocol

from ..base import CheckReport, CompiledConstraint, ExportedGrammar, SequenceConstraint
from .check import check, finalize, releasable
from .grammar import CompiledWords, GrammarOptions, lark_grammar

__all__ = [
    "LANGUAGE_NAMES",
    "LARK_TOKENIZER_NOTE",
    "PROMPT_HINT",
    "WordlistBackend",
    "WordlistConstraint",
    "prompt_hint",
]

#: The instruction given to the model with a word-list constraint. One place, so that the quality
#: experiments tune it here.
PROMPT_HINT = "Answer using only common {language} words; do not use digits, symbols or lists."

LANGUAGE_NAMES = MappingProxyType(
    {
        "es": "Spanish",
        "en": "English",
        "fr": "French",
        "de": "German",
        "it": "Italian",
        "pt": "Portuguese",
        "ca": "Catalan",
        "nl": "Dutch",
    }
)

#: What the exported Lark grammar assumes about tokenization (see `exported_grammar`).
LARK_TOKENIZER_NOTE = (
    "Character-level grammar over UTF-8 text: it does not assume the split whitespace "
    "vocabulary and works with any byte-level llguidance tokenizer. This server's llguidance "
    "backend compiles the same text over a copy of the vocabulary whose whitespace-initial "
    "tokens have their leading whitespace split off, only so that it can cache masks; over the "
    "tokenizer's ordinary vocabulary it gives the same masks. `no_forcing` keeps every "
    "tokenization of forced bytes allowed, not only the tokenizer's canonical one."
)


def prompt_hint(lang: str) -> str:
    """The model instruction for a list of language `lang`."""
    return PROMPT_HINT.format(language=LANGUAGE_NAMES.get(lang, lang))


class WordlistBackend(Protocol):
    """A backend's compiled form of one word list (`LlguidanceWordlist`, `LmfeWordlist`)."""

    def start(self) -> SequenceConstraint: ...

    def accepts(self, text: str) -> bool: ...

    def warm(self, n_words: int, budget_s: float) -> None: ...


class WordlistConstraint(CompiledConstraint):
    """`vocab_lang` + `vocab_n_words`, compiled for one tokenizer and backend (shared, cached).

    `backend` names the backend; `backend_impl` is that backend's compiled form of the list, which
    hands out the decoding states.
    """

    def __init__(
        self,
        *,
        lang: str,
        words: tuple[str, ...],
        sha256: str,
        backend: str,
        options: GrammarOptions,
        backend_impl: WordlistBackend,
        compiled_words: CompiledWords,
        compile_seconds: float,
        unit: str = "word",
        n_units: int | None = None,
    ) -> None:
        """`words` are the allowed forms; `unit` and `n_units` what the request counted
        (`n_units` headwords give `len(words)` forms in lemma mode)."""
        self.lang = lang
        self.unit = unit
        self.n_words = len(words) if n_units is None else n_units
        self.n_forms = len(words)
        self.sha256 = sha256
        self.backend = backend
        self.options = options
        self.backend_impl = backend_impl
        self.compiled_words = compiled_words
        self.words = frozenset(words)
        self.compile_seconds = compile_seconds
        self.warm_seconds: float | None = None
        self._warm_lock = threading.Lock()

    def warm(self, n_words: int = 2000, budget_s: float = 10.0) -> float:
        """Prepare the masks that first generations need (see `LlguidanceWordlist.warm`), once; a
        second caller waits for the first. Returns the seconds it took."""
        with self._warm_lock:
            if self.warm_seconds is None:
                t0 = time.perf_counter()
                try:
                    self.backend_impl.warm(n_words, budget_s)
                finally:
                    self.warm_seconds = time.perf_counter() - t0
            return self.warm_seconds

    def start(self) -> SequenceConstraint:
        return self.backend_impl.start()

    def releasable(self, text: str) -> int:
        return releasable(text)

    def finalize(self, text: str, complete: bool) -> str:
        return finalize(text, complete, self.words, self.options.allow_capitalized)

    def check(self, text: str) -> CheckReport:
        violations = check(text, self.words, self.options.allow_capitalized)
        return CheckReport(
            ok=not violations,
            violations=violations,
            details=self._vocabulary(),
        )

    def _vocabulary(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "vocab_lang": self.lang,
            "vocab_n_words": self.n_words,
            "vocab_unit": self.unit,
        }
        if self.unit != "word":
            info["allowed_forms"] = self.n_forms
        return info

    def prompt_hint(self) -> str:
        return prompt_hint(self.lang)

    def describe(self) -> dict[str, Any]:
        return {
            **self._vocabulary(),
            "backend": self.backend,
            "sha256": self.sha256,
            "compile_seconds": round(self.compile_seconds, 4),
        }

    def exported_grammar(self) -> ExportedGrammar:
        """The Lark grammar the llguidance backend compiles (whichever backend this one uses:
        both enforce the same language)."""
        return ExportedGrammar(
            "lark", lark_grammar(self.compiled_words), tokenizer_note=LARK_TOKENIZER_NOTE
        )

    def accepts(self, text: str) -> bool:
        """Character-level acceptance by this backend (used to test that backends agree)."""
        return bool(self.backend_impl.accepts(text))
