"""Headword (lemma) lists: vocabulary counted the way teachers and graded readers count it.

A learner who knows "perro" knows "perros". A lemma file `lemmas/<lang>.tsv` (next to the word
lists, built by `scripts/build_wordlists.py`) holds one headword per line, most frequent first
(ranked by the summed frequency of its forms):

    lemma<TAB>form form form ...

`#` lines are comments. The forms are entries of the language's word list `<lang>.txt`; a form
may stand under several lemmas. With `vocab_unit: "lemma"`, `vocab_n_words` counts headwords, and
the allowed words are the forms of the list whose lemma is among the first `n` (a form shared by
several lemmas is allowed when any of them is).

Like `lists`, this module imports neither torch nor the web framework.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .lists import Wordlist, WordlistError, normalize_word

__all__ = ["LemmaList", "LemmaListNotFound", "lemma_path", "load_lemmas"]

#: The units `vocab_n_words` can count.
UNITS = ("word", "lemma")


class LemmaListNotFound(WordlistError):
    """The language has a word list but no lemma file."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        super().__init__(f"no lemma list for language {lang!r}")


def lemma_path(directory: Path, lang: str) -> Path:
    return Path(directory) / "lemmas" / f"{lang}.tsv"


@dataclass(frozen=True)
class LemmaList:
    """The headwords of one language with their forms, restricted to its word list.

    `forms[i]` are the list entries of `lemmas[i]`, in the list's rank order. Immutable and
    shared across requests.
    """

    lang: str
    lemmas: tuple[str, ...]
    forms: tuple[tuple[str, ...], ...]
    #: SHA-256 of the lemma file's cleaned content (lemma + forms per line): what it says.
    sha256: str
    _ranks: dict[str, int] = field(repr=False, compare=False, hash=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.lemmas)

    def top_forms(self, n: int) -> tuple[str, ...]:
        """Every form of the `n` most frequent headwords, in the word list's rank order. Not
        memoized: it is asked once per compilation, whose result the compiler caches."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        seen = {f for group in self.forms[:n] for f in group}
        return tuple(sorted(seen, key=self._ranks.__getitem__))

    def lemmas_of(self, form: str) -> list[tuple[int, str]]:
        """(1-based headword rank, lemma) of every headword `form` belongs to, best rank first."""
        return [
            (i, lemma)
            for i, (lemma, group) in enumerate(zip(self.lemmas, self.forms, strict=True), 1)
            if form in group
        ]

    def form_ranks(self) -> dict[str, int]:
        """Each form -> the best (1-based) headword rank it belongs to."""
        best: dict[str, int] = {}
        for i, group in enumerate(self.forms, 1):
            for f in group:
                best.setdefault(f, i)
        return best


def _entries(text: str) -> Iterable[tuple[str, list[str]]]:
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lemma, _, rest = line.partition("\t")
        yield lemma.strip(), rest.split()


def load_lemmas(path: Path, wordlist: Wordlist) -> LemmaList:
    """Read `path` against `wordlist`: forms are normalized like list entries and those not in the
    list are dropped, as are headwords left without forms; a repeated headword keeps its first
    (most frequent) line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LemmaListNotFound(wordlist.lang) from None
    except UnicodeDecodeError as exc:
        raise WordlistError(f"lemma list {path.name!r} is not valid UTF-8: {exc}") from exc
    ranks = {w: i for i, w in enumerate(wordlist.words)}
    lemmas: list[str] = []
    forms: list[tuple[str, ...]] = []
    seen: set[str] = set()
    digest = hashlib.sha256()
    for raw_lemma, raw_forms in _entries(text):
        lemma = normalize_word(raw_lemma) or raw_lemma
        if not lemma or lemma in seen:
            continue
        group = {f for f in (normalize_word(x) for x in raw_forms) if f is not None and f in ranks}
        if not group:
            continue
        seen.add(lemma)
        ordered = tuple(sorted(group, key=ranks.__getitem__))
        lemmas.append(lemma)
        forms.append(ordered)
        digest.update(f"{lemma}\t{' '.join(ordered)}\n".encode())
    if not lemmas:
        raise WordlistError(f"lemma list {path.name!r} holds no headword with a listed form")
    return LemmaList(
        lang=wordlist.lang,
        lemmas=tuple(lemmas),
        forms=tuple(forms),
        sha256=digest.hexdigest(),
        _ranks=ranks,
    )
