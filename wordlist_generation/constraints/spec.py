"""What a request asks the vocabulary to be, as one hashable, typed value.

The protocol layer turns request fields into a spec; the compiler (`constraints.compiler`) turns
any spec into a `CompiledConstraint` through one cache. A new constraint kind is one spec class
here, one compile handler registered with the compiler, and one independent check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class WordlistSpec:
    """The `n_words` most frequent entries of the list for `lang` (`vocab_lang`/`vocab_n_words`).

    `unit` says what `n_words` counts (`vocab_unit`): word forms ("word"), or headwords
    ("lemma"), whose forms in the word list are then all allowed.
    """

    kind: ClassVar[str] = "wordlist"
    lang: str
    n_words: int
    unit: str = "word"

    def label(self) -> str:
        suffix = "" if self.unit == "word" else f":{self.unit}"
        return f"{self.lang}:{self.n_words}{suffix}"


@dataclass(frozen=True)
class PhonologicalSpec:
    """Sound constraints over the English pronunciation lexicon (`constraints`).

    `constraints` holds the validated, frozen constraint models (hashable, compared by value);
    `n_words` optionally limits the lexicon to its most frequent words first.
    """

    kind: ClassVar[str] = "phonological"
    constraints: tuple[Any, ...]
    n_words: int | None = None

    def label(self) -> str:
        return f"phonological:{len(self.constraints)}"


@dataclass(frozen=True)
class StructuredSpec:
    """A structured answer (`response_format`): `format` is "json_object", "json_schema" or
    "regex"; `body` the schema as compact JSON text (its key order kept: it is the order of the
    answer's properties), the pattern, or "" for any JSON object. With `vocabulary`, every JSON
    string value is an answer in that word list.
    """

    kind: ClassVar[str] = "structured"
    format: str
    body: str = ""
    name: str | None = None
    vocabulary: WordlistSpec | None = None

    def label(self) -> str:
        label = self.format if self.name is None else f"{self.format}:{self.name}"
        return label if self.vocabulary is None else f"{label}+{self.vocabulary.label()}"


ConstraintSpec = WordlistSpec | PhonologicalSpec | StructuredSpec
