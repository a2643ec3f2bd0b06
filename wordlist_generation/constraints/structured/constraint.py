"""`StructuredSpec` -> `StructuredConstraint`: a JSON or regex answer as one llguidance grammar.

The handler compiles the spec's word list through the same constraint compiler (so a list
already compiled for plain answers is shared, and its independent re-check is reused), rewrites
the schema under it (`schema.vocabulary_schema`) and compiles one Lark grammar (`%json {...}` or
`/regex/`) over the tokenizer's own vocabulary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable
from typing import Any

from ... import errors
from ..base import CheckReport, CompiledConstraint, ExportedGrammar, SequenceConstraint
from ..compiler import LLG_BYTES_PER_GRAMMAR_CHAR, LLG_FIXED_BYTES, ConstraintCompiler, SpecHandler
from ..llg import LlguidanceGrammar, new_matcher
from ..spec import StructuredSpec, WordlistSpec
from ..tokenizer import TokenizerTables
from ..wordlist.constraint import LANGUAGE_NAMES, WordlistConstraint
from ..wordlist.grammar import answer_regex
from .check import check_json, check_regex
from .schema import SchemaError, any_object_schema, lark_json, value_pattern, vocabulary_schema

__all__ = ["STRUCTURED_VERSION", "StructuredConstraint", "StructuredHandler"]

#: Bump whenever the grammar built from a spec changes: it is part of every cache key.
STRUCTURED_VERSION = 1

#: A word list's answer regex, quoted into every string of a schema, needs more lexer fuel than
#: llguidance's defaults at 50,000 words (measured: compiles in ~2 s, masks under 25 ms).
VOCABULARY_LIMITS = {"initial_lexer_fuel": 50_000_000, "step_lexer_fuel": 5_000_000}

PROMPT_HINT = "Answer in JSON. Write every text value using only common {language} words."

TOKENIZER_NOTE = (
    "Character-level llguidance Lark grammar; compiled by this server over the tokenizer's own "
    "vocabulary, with llguidance's default token forcing."
)

_SCHEMA_PARAM = "response_format.json_schema.schema"


class StructuredConstraint(CompiledConstraint):
    """A `response_format` compiled for one tokenizer (shared, cached).

    JSON is never trimmed or held back: every token the grammar allowed keeps the text a prefix
    of a valid answer, and an answer cut by `max_tokens` is returned as it is and re-checked as
    not compliant (it does not parse).
    """

    def __init__(
        self,
        spec: StructuredSpec,
        grammar: LlguidanceGrammar,
        lark: str,
        schema: Any,
        vocabulary: WordlistConstraint | None,
    ) -> None:
        self.spec = spec
        self.grammar = grammar
        self.lark = lark
        self.schema = schema
        self.vocabulary = vocabulary
        self.compile_seconds = grammar.compile_seconds
        #: The grammar's length with the word-list pattern counted once: llguidance shares equal
        #: regexes, so a schema with ten strings weighs about what one with a single string does.
        self.grammar_chars = len(lark)
        if vocabulary is not None:
            pattern = value_pattern(answer_regex(vocabulary.compiled_words))
            quoted = json.dumps(pattern, ensure_ascii=False)[1:-1]
            copies = lark.count(quoted)
            self.grammar_chars -= max(copies - 1, 0) * len(quoted)

    def start(self) -> SequenceConstraint:
        return self.grammar.start()

    def releasable(self, text: str) -> int:
        return len(text)

    def finalize(self, text: str, complete: bool) -> str:
        return text

    def check(self, text: str) -> CheckReport:
        if self.spec.format == "regex":
            violations = check_regex(text, self.spec.body)
        else:
            words = None if self.vocabulary is None else self._words
            violations = check_json(text, self.schema, words)
        return CheckReport(ok=not violations, violations=violations)

    def _words(self, value: str) -> list[str]:
        """The word-list re-check of one string value."""
        assert self.vocabulary is not None
        return self.vocabulary.check(value).violations

    def prompt_hint(self) -> str | None:
        if self.vocabulary is None:
            return None
        lang = self.vocabulary.lang
        return PROMPT_HINT.format(language=LANGUAGE_NAMES.get(lang, lang))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"response_format": self.spec.format, "backend": "llguidance"}
        if self.spec.name is not None:
            info["schema_name"] = self.spec.name
        if self.vocabulary is not None:
            vocab = self.vocabulary.describe()
            info.update({k: v for k, v in vocab.items() if k not in ("backend", "compile_seconds")})
        info["compile_seconds"] = round(self.compile_seconds, 4)
        return info

    def exported_grammar(self) -> ExportedGrammar:
        return ExportedGrammar("lark", self.lark, tokenizer_note=TOKENIZER_NOTE)


class StructuredHandler(SpecHandler[StructuredSpec]):
    """Compiles `StructuredSpec`s; word lists come from `compiler` (cached with the others)."""

    def __init__(self, tables: TokenizerTables, compiler: ConstraintCompiler) -> None:
        self.tables = tables
        self.compiler = compiler

    def footprint(self, constraint: CompiledConstraint) -> int:
        assert isinstance(constraint, StructuredConstraint)
        return LLG_FIXED_BYTES + LLG_BYTES_PER_GRAMMAR_CHAR * constraint.grammar_chars

    def key(self, spec: StructuredSpec) -> Hashable:
        vocab = None
        if spec.vocabulary is not None:
            vocab = self.compiler.handler(WordlistSpec).key(spec.vocabulary)
        return (spec.format, spec.body, spec.name, vocab, STRUCTURED_VERSION)

    def compile(self, spec: StructuredSpec) -> StructuredConstraint:
        import llguidance

        vocabulary = None
        if spec.vocabulary is not None:
            compiled = self.compiler.compile(spec.vocabulary).constraint
            assert isinstance(compiled, WordlistConstraint)
            vocabulary = compiled
        schema: Any = None
        if spec.format == "regex":
            lark = f"start: /{llguidance.regex_to_lark(spec.body, '')}/\n"
            param = "response_format.pattern"
        else:
            schema = json.loads(spec.body) if spec.format == "json_schema" else any_object_schema()
            served = schema
            if vocabulary is not None:
                served = self._restrict(schema, vocabulary)
            if not isinstance(served, dict):
                raise errors.InvalidRequest("the schema must be a JSON object", param=_SCHEMA_PARAM)
            lark = lark_json(served)
            param = "response_format"
        limits = llguidance.LLParserLimits(
            verbose_errors=False, **(VOCABULARY_LIMITS if vocabulary is not None else {})
        )
        t0 = time.perf_counter()
        try:
            matcher = new_matcher(self.tables.ll, lark, limits=limits, what="response_format")
        except ValueError as exc:
            raise errors.InvalidRequest(
                f"response_format cannot be served: {_reason(str(exc))}", param=param
            ) from exc
        grammar = LlguidanceGrammar(matcher, self.tables, time.perf_counter() - t0)
        return StructuredConstraint(spec, grammar, lark, schema, vocabulary)

    @staticmethod
    def _restrict(schema: Any, vocabulary: WordlistConstraint) -> Any:
        def words(text: str) -> list[str]:
            return vocabulary.check(text).violations

        try:
            return vocabulary_schema(schema, answer_regex(vocabulary.compiled_words), words)
        except SchemaError as exc:
            param = ".".join([_SCHEMA_PARAM, *map(str, exc.path)])
            raise errors.InvalidRequest(exc.message, param=param) from exc


def _reason(message: str) -> str:
    """llguidance's error without its position and grammar excerpt, at most 300 characters."""
    first = message.splitlines()[0] if message else "invalid"
    for marker in ("failed to compile JSON schema: ", "did not compile: "):
        if marker in first:
            first = first.split(marker, 1)[1]
            break
    return first[:300]
