"""Word-list specs -> `WordlistConstraint`s: the handler the constraint compiler runs for them.

The key of a compiled list is (backend, hash of the top-n list contents, n, grammar options,
grammar version); the tokenizer is the handler's own. The compiler in front of it
(`constraints.compiler.ConstraintCompiler`) caches by that key and compiles each key once.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from ... import errors
from ..base import WARM_STOP, CompiledConstraint
from ..bitmask import apply_bitmask, zeros
from ..compiler import MIB, ConstraintCompiler, SpecHandler
from ..spec import WordlistSpec
from ..tokenizer import TokenizerTables
from .constraint import WordlistBackend, WordlistConstraint
from .grammar import GRAMMAR_VERSION, GrammarOptions, compile_words, lark_grammar
from .lemmas import LemmaList, LemmaListNotFound
from .lists import (
    LANG_RE,
    EmptyWordlist,
    Wordlist,
    WordlistError,
    WordlistNotFound,
    WordlistRegistry,
)
from .llguidance import LlguidanceWordlist
from .lmfe import LmfeWordlist

log = logging.getLogger(__name__)

#: Private memory of a word-list constraint once warm and in use, fixed part and per character of
#: its grammar: the llguidance matcher and lexer plus this backend's mask caches. Measured by
#: `scripts/bench_cache_memory.py` (es 1k-50k, en/de 50k: 10-138 MiB after compiling, warming
#: and decoding 80 random texts), with headroom.
WORDLIST_FIXED_BYTES = 32 * MIB
WORDLIST_BYTES_PER_GRAMMAR_CHAR = 512

__all__ = ["BACKENDS", "WordlistHandler", "prebuild", "wordlist_compiler"]

#: Background warm-ups still running (`WordlistHandler.compiled`).
_WARMING: set[threading.Thread] = set()


@atexit.register
def _stop_warming() -> None:
    """At exit, let running warm-ups notice `WARM_STOP` and end before the interpreter goes."""
    WARM_STOP.set()
    for thread in list(_WARMING):
        thread.join(timeout=10)


#: Backend name (`CONSTRAINT_BACKEND`) -> its compiled form of a list.
BACKENDS: dict[str, type[LlguidanceWordlist] | type[LmfeWordlist]] = {
    "llguidance": LlguidanceWordlist,
    "lm-format-enforcer": LmfeWordlist,
}


class WordlistHandler(SpecHandler[WordlistSpec]):
    """Compiles `WordlistSpec`s for one tokenizer with one backend and grammar options."""

    def __init__(
        self,
        tables: TokenizerTables,
        registry: WordlistRegistry,
        backend: str = "llguidance",
        options: GrammarOptions = GrammarOptions(),
        *,
        warm_words: int = 2000,
        warm_budget_s: float = 10.0,
        background_warm: bool = True,
    ) -> None:
        """After a compilation, a background thread warms the new constraint (its separator masks
        and the masks along its `warm_words` most frequent words, at most `warm_budget_s`
        seconds) so that the first requests do not pay for llguidance's lazily built lexer;
        `prebuild` does it synchronously. `background_warm=False` leaves it to the caller.
        """
        if backend not in BACKENDS:
            raise ValueError(
                f"unknown constraint backend {backend!r}; expected one of {tuple(BACKENDS)}"
            )
        self.tables = tables
        self.registry = registry
        self.backend_name = backend
        self.options = options
        self.warm_words = warm_words
        self.warm_budget_s = warm_budget_s
        self.background_warm = background_warm

    def _wordlist(self, spec: WordlistSpec) -> Wordlist:
        """The list of `spec.lang`, or the typed error naming the request field at fault."""
        lang = spec.lang
        if not LANG_RE.fullmatch(lang):
            raise errors.InvalidRequest("vocab_lang must match [A-Za-z0-9_-]+", param="vocab_lang")
        try:
            wordlist = self.registry.get(lang)
        except WordlistNotFound as exc:
            raise errors.WordlistNotFound(
                f"no word list for language '{lang}'; available: {', '.join(exc.available)}",
                param="vocab_lang",
            ) from exc
        except EmptyWordlist as exc:
            raise errors.InvalidRequest(
                f"the word list for '{lang}' is empty", param="vocab_lang"
            ) from exc
        if spec.unit == "word" and not 1 <= spec.n_words <= len(wordlist):
            raise errors.InvalidRequest(
                f"vocab_n_words must be between 1 and {len(wordlist)} (the length of the "
                f"'{lang}' list)",
                param="vocab_n_words",
            )
        return wordlist

    def _lemmas(self, spec: WordlistSpec) -> LemmaList:
        """The headword list of `spec.lang`, or the typed error naming the field at fault."""
        try:
            lemmas = self.registry.lemmas(spec.lang)
        except LemmaListNotFound as exc:
            raise errors.InvalidRequest(
                f"there is no headword (lemma) list for '{spec.lang}'; use vocab_unit 'word'",
                param="vocab_unit",
            ) from exc
        except WordlistError as exc:
            raise errors.InvalidRequest(
                f"the headword list for '{spec.lang}' cannot be used: {exc}", param="vocab_unit"
            ) from exc
        if not 1 <= spec.n_words <= len(lemmas):
            raise errors.InvalidRequest(
                f"vocab_n_words must be between 1 and {len(lemmas)} (the number of headwords in "
                f"the '{spec.lang}' lemma list)",
                param="vocab_n_words",
            )
        return lemmas

    def _words(self, spec: WordlistSpec) -> tuple[tuple[str, ...], str]:
        """The allowed word forms of `spec` and their hash (computed like a list's)."""
        wordlist = self._wordlist(spec)
        if spec.unit == "lemma":
            forms = self._lemmas(spec).top_forms(spec.n_words)
            return forms, Wordlist.from_words(spec.lang, forms, wordlist.path).sha256
        return wordlist.top(spec.n_words), wordlist.sha256_top(spec.n_words)

    def key(self, spec: WordlistSpec) -> Hashable:
        if spec.unit == "lemma":
            wordlist = self._wordlist(spec)
            lemmas = self._lemmas(spec)
            sha = (wordlist.sha256, lemmas.sha256)
        else:
            sha = self._wordlist(spec).sha256_top(spec.n_words)
        return (self.backend_name, spec.unit, sha, spec.n_words, self.options, GRAMMAR_VERSION)

    def compile(self, spec: WordlistSpec) -> WordlistConstraint:
        words, sha256 = self._words(spec)
        t0 = time.perf_counter()
        cw = compile_words(words, self.options)
        impl: WordlistBackend = BACKENDS[self.backend_name](cw, self.tables)
        seconds = time.perf_counter() - t0
        log.info(
            "compiled %s/%d %s (%d forms) with %s in %.3f s",
            spec.lang,
            spec.n_words,
            spec.unit,
            len(words),
            self.backend_name,
            seconds,
        )
        return WordlistConstraint(
            lang=spec.lang,
            words=words,
            sha256=sha256,
            backend=self.backend_name,
            options=self.options,
            backend_impl=impl,
            compiled_words=cw,
            compile_seconds=seconds,
            unit=spec.unit,
            n_units=spec.n_words,
        )

    def compiled(self, constraint: CompiledConstraint) -> None:
        if self.background_warm and self.warm_words > 0:
            assert isinstance(constraint, WordlistConstraint)
            thread = threading.Thread(
                target=self._warm, args=(constraint,), name="constraint-warm", daemon=True
            )
            _WARMING.add(thread)
            thread.start()

    def footprint(self, constraint: CompiledConstraint) -> int:
        assert isinstance(constraint, WordlistConstraint)
        grammar = lark_grammar(constraint.compiled_words)
        return WORDLIST_FIXED_BYTES + WORDLIST_BYTES_PER_GRAMMAR_CHAR * len(grammar)

    def _warm(self, constraint: WordlistConstraint) -> None:
        try:
            seconds = constraint.warm(self.warm_words, self.warm_budget_s)
            if not WARM_STOP.is_set():  # at exit the log's streams may be closed already
                log.info("warmed %s/%d in %.2f s", constraint.lang, constraint.n_words, seconds)
        except Exception:  # a warm-up failure must not take anything down; requests still work
            log.exception("warming %s/%d failed", constraint.lang, constraint.n_words)
        finally:
            _WARMING.discard(threading.current_thread())

    def warmup(self) -> None:
        """Build the per-tokenizer data of the backend and exercise one tiny constraint end to
        end, so that no user request pays for first-use work."""
        tables = self.tables
        if self.backend_name == "lm-format-enforcer":
            tables.lmfe_data()
        cw = compile_words(("hola", "mundo", "l'"), self.options)
        seq = BACKENDS[self.backend_name](cw, tables).start()
        row = zeros(tables.width)
        for tok in tables.tokenizer.encode("Hola mundo", add_special_tokens=False):
            if not seq.fill_bitmask(row):
                seq.fill_allowed(torch.zeros(tables.vocab_size, dtype=torch.bool))
            if not seq.advance(tok):
                break
        scores = torch.zeros((1, tables.vocab_size))
        apply_bitmask(scores, row.unsqueeze(0))


def prebuild(compiler: ConstraintCompiler, langs: Sequence[str], counts: Sequence[int]) -> None:
    """Compile (through `compiler`, so the results are cached) and warm every (language, count)
    pair now, smallest first; a count beyond a list's length means the whole list."""
    handler = compiler.handler(WordlistSpec)
    assert isinstance(handler, WordlistHandler)
    for lang in langs:
        size = len(handler.registry.get(lang))
        for n in sorted(counts):
            constraint = compiler.compile(WordlistSpec(lang, min(n, size))).constraint
            assert isinstance(constraint, WordlistConstraint)
            constraint.warm(handler.warm_words, handler.warm_budget_s)
            log.info(
                "prebuilt %s/%d (compile %.3f s, warm %.2f s)",
                lang,
                n,
                constraint.compile_seconds,
                constraint.warm_seconds or 0.0,
            )


def wordlist_compiler(
    tokenizer: Any,
    registry: WordlistRegistry,
    *,
    backend: str = "llguidance",
    cache_size: int = 32,
    cache_bytes: int | None = None,
    tables: TokenizerTables | None = None,
    **handler_kwargs: Any,
) -> ConstraintCompiler:
    """A compiler serving word-list specs only (tests, scripts). `tables` lets several compilers
    of one tokenizer share its tables; `handler_kwargs` go to `WordlistHandler`."""
    handler = WordlistHandler(
        tables if tables is not None else TokenizerTables(tokenizer),
        registry,
        backend,
        **handler_kwargs,
    )
    compiler = ConstraintCompiler(cache_size, cache_bytes)
    compiler.register(WordlistSpec, handler)
    return compiler
