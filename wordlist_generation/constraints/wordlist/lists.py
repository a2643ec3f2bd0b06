"""Word lists: the vocabulary a generated text is restricted to.

A word list is a UTF-8 text file `<lang>.txt`, one word per line, most frequent first, so that a
request can ask for the `n` most frequent words of a language. The shipped lists live in the
repository's `wordlists/` directory (built by `scripts/build_wordlists.py`); a deployment may point
the registry at another directory holding its own lists.

The same `normalize_word` is applied by the build script and by the loader, so a list dropped in by
hand is held to exactly the rules the shipped lists were built with, and a shipped list loads
unchanged (its content hash is the hash of its file).

An entry ending in an apostrophe (`l'`, `dell'`) is an elided clitic: it is written attached to the
following word (`l'homme`), never on its own.

This module deliberately imports neither torch nor the web framework: it is used by the build
script, the HTTP layer and the constraint compiler alike.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LANG_RE",
    "EmptyWordlist",
    "InvalidLanguage",
    "Wordlist",
    "WordlistError",
    "WordlistNotFound",
    "WordlistRegistry",
    "capitalized",
    "clean_words",
    "default_wordlist_dir",
    "load_wordlist",
    "normalize_word",
]

#: A language name is a file stem made of these characters only, so that a request parameter can
#: never name a path outside the word-list directory.
LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")

#: Characters allowed inside a word (never first or last, never two in a row): apostrophe
#: (`don't`, `aujourd'hui`), hyphen (`e-mail`), period (`ee.uu`) and the Catalan middle dot
#: (`col·lecció`), which joins letters within one word in that language's orthography.
JOINERS = frozenset("'-.·")

#: Typographic variants folded into their ASCII joiner: wordfreq's data and most user lists
#: contain both `aujourd'hui` and `aujourd’hui`, which must be one word.
_FOLD = str.maketrans({"\u2019": "'", "\u2010": "-", "\u2011": "-", "\u00ad": None})


class WordlistError(Exception):
    """Base class of every word-list problem (the HTTP layer maps them to client errors)."""


class WordlistNotFound(WordlistError):
    """No list exists for the requested language."""

    def __init__(self, lang: str, available: list[str]) -> None:
        self.lang = lang
        self.available = list(available)
        shown = ", ".join(self.available) if self.available else "none"
        super().__init__(f"no word list for language {lang!r}; available: {shown}")


class EmptyWordlist(WordlistError):
    """A list file holds no usable word once blank lines, comments and invalid words are gone."""

    def __init__(self, lang: str, path: Path) -> None:
        self.lang = lang
        self.path = path
        super().__init__(
            f"word list {path.name!r} for language {lang!r} contains no valid word after cleaning"
        )


class InvalidLanguage(WordlistError):
    """The language name is not a plain file stem (it could otherwise escape the directory)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        super().__init__(
            f"invalid language name {lang!r}: only letters, digits, '_' and '-' are allowed"
        )


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "L"


def _is_word_char(ch: str) -> bool:
    """Letters, and combining marks that no precomposed letter absorbed under NFC."""
    return unicodedata.category(ch)[0] in "LM"


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "P"


def normalize_word(word: str) -> str | None:
    """The canonical form of one word-list entry, or None when it is not a word.

    Canonical means: surrounding whitespace removed, NFC, lowercase, U+2019 folded to `'`, and
    surrounding punctuation removed (`¿qué?` -> `qué`), except that a single final apostrophe
    after a letter is kept because it marks an elided clitic (`l'`). Dropped (None): anything
    containing digits, symbols, emoji, spaces or other punctuation; joiners (see `JOINERS`) are
    allowed only between word characters, so `don't` and `ee.uu` stay whole.

    Both the build script and the loader call this, which is what makes a shipped list load
    byte-for-byte unchanged and a hand-made list obey the same rules.
    """
    w = unicodedata.normalize("NFC", word.strip()).lower().translate(_FOLD)
    if "\u0307" in w:
        # str.lower() turns U+0130 (İ) into "i" + combining dot above, which is never the intended
        # lowercase of a Latin-script word; plain "i" is.
        w = w.replace("i\u0307", "i")
    w = unicodedata.normalize("NFC", w)
    if w.isalpha():  # the common case, decided without a per-character loop
        return w
    start, end = 0, len(w)
    while start < end and _is_punct(w[start]):
        start += 1
    while end > start and _is_punct(w[end - 1]):
        end -= 1
    core = w[start:end]
    if not core or not _is_letter(core[0]) or not _is_word_char(core[-1]):
        return None
    previous_joiner = False
    for ch in core[1:-1]:
        if ch in JOINERS:
            if previous_joiner:
                return None
            previous_joiner = True
        elif _is_word_char(ch):
            previous_joiner = False
        else:
            return None
    if start == 0 and w[end:] == "'":
        return core + "'"
    return core


def capitalized(word: str) -> str | None:
    """The word with its first character upper-cased, or None when that is not a distinct single
    character (already upper case, no case, or `ß` -> `SS`).

    The one capitalization rule: the grammar allows these forms, the checker accepts them.
    """
    if not word:
        return None
    first = word[0]
    upper = first.upper()
    if len(upper) != 1 or upper == first:
        return None
    return upper + word[1:]


def clean_words(raw: Iterable[str]) -> list[str]:
    """Normalized words in their original order, invalid ones dropped, duplicates keeping the
    first (most frequent) rank."""
    seen: set[str] = set()
    out: list[str] = []
    for item in raw:
        word = normalize_word(item)
        if word is not None and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _digest(words: Iterable[str]) -> str:
    """SHA-256 of the canonical file content: one word per line, each line ending in `\\n`."""
    h = hashlib.sha256()
    for w in words:
        h.update(w.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Wordlist:
    """One loaded, normalized list. Immutable, so it can be shared across threads and requests."""

    lang: str
    words: tuple[str, ...]
    #: Hex SHA-256 of `"\n".join(words) + "\n"` in UTF-8: identifies the vocabulary, not the file
    #: bytes (comments, case or duplicates in a hand-made file do not change it).
    sha256: str
    path: Path
    _top_hashes: dict[int, str] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_words(cls, lang: str, words: Iterable[str], path: Path) -> Wordlist:
        """A list from already-normalized words, with its hash computed."""
        words = tuple(words)
        return cls(lang=lang, words=words, sha256=_digest(words), path=path)

    def top(self, n: int) -> tuple[str, ...]:
        """The `n` most frequent words (all of them when the list is shorter)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return self.words[:n]

    def sha256_top(self, n: int) -> str:
        """Hash of `top(n)`, computed like `sha256`: the cache key of a constraint compiled from it.

        Memoized per instance because it is asked on every request and hashing 50,000 words is
        not free; a reloaded file gives a new instance, hence a fresh memo.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        n = min(n, len(self.words))
        if n == len(self.words):
            return self.sha256
        cached = self._top_hashes.get(n)
        if cached is None:
            cached = _digest(self.words[:n])
            self._top_hashes[n] = cached
        return cached

    def __len__(self) -> int:
        return len(self.words)


def default_wordlist_dir() -> Path:
    """The repository's `wordlists/` directory, where the shipped lists are."""
    return Path(__file__).resolve().parents[3] / "wordlists"


def _check_lang(lang: str) -> None:
    if not isinstance(lang, str) or not LANG_RE.fullmatch(lang):
        raise InvalidLanguage(str(lang))


def load_wordlist(path: Path, lang: str | None = None) -> Wordlist:
    """Read and clean one list file.

    Blank lines and lines starting with `#` are skipped; when a line holds several
    whitespace-separated fields (a `word count` frequency list) only the first is the word.
    A UTF-8 byte-order mark is tolerated.
    """
    path = Path(path)
    lang = path.stem if lang is None else lang
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WordlistError(f"word list {path.name!r} is not valid UTF-8: {exc}") from exc

    def entries() -> Iterable[str]:
        for line in text.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                yield stripped.split(None, 1)[0]

    words = clean_words(entries())
    if not words:
        raise EmptyWordlist(lang, path)
    return Wordlist.from_words(lang, words, path)


class WordlistRegistry:
    """The lists of one directory, loaded on first use and cached.

    One instance per application. Thread-safe: a lock guards the cache, and a file whose
    modification time or size changed since it was loaded is read again, so replacing a list
    takes effect without a restart.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], Wordlist]] = {}
        self._lemma_cache: dict[str, tuple[tuple[int, int], Wordlist, Any]] = {}

    @property
    def directory(self) -> Path:
        return self._directory

    def languages(self) -> list[str]:
        """Sorted language names: the stems of `*.txt` files whose stem matches `LANG_RE`."""
        try:
            names = os.listdir(self._directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        langs = []
        for name in names:
            stem, dot, ext = name.rpartition(".")
            if dot and ext == "txt" and LANG_RE.fullmatch(stem):
                if (self._directory / name).is_file():
                    langs.append(stem)
        return sorted(langs)

    def get(self, lang: str) -> Wordlist:
        """The list of `lang` (exact, case-sensitive file stem).

        Raises InvalidLanguage before touching the file system when `lang` is not a plain name,
        WordlistNotFound (with the available languages) when there is no such file, and
        EmptyWordlist when the file holds no valid word.
        """
        _check_lang(lang)
        # Comparing against the directory listing keeps the lookup case-sensitive even on
        # case-insensitive file systems, where `ES.txt` would otherwise open `es.txt`.
        available = self.languages()
        if lang not in available:
            raise WordlistNotFound(lang, available)
        path = self._directory / f"{lang}.txt"
        with self._lock:
            try:
                st = path.stat()
            except FileNotFoundError:
                self._cache.pop(lang, None)
                raise WordlistNotFound(lang, self.languages()) from None
            signature = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(lang)
            if cached is not None and cached[0] == signature:
                return cached[1]
            try:
                wordlist = load_wordlist(path, lang)
            except FileNotFoundError:
                self._cache.pop(lang, None)
                raise WordlistNotFound(lang, self.languages()) from None
            except WordlistError:
                self._cache.pop(lang, None)
                raise
            self._cache[lang] = (signature, wordlist)
            return wordlist

    def lemmas(self, lang: str) -> Any:
        """The headword list of `lang` (a `lemmas.LemmaList`), read against its word list.

        Raises what `get` raises, and `lemmas.LemmaListNotFound` when the language has no lemma
        file. Re-read when either file changes, like the word lists.
        """
        from .lemmas import LemmaListNotFound, lemma_path, load_lemmas

        wordlist = self.get(lang)
        path = lemma_path(self._directory, lang)
        with self._lock:
            try:
                st = path.stat()
            except FileNotFoundError:
                self._lemma_cache.pop(lang, None)
                raise LemmaListNotFound(lang) from None
            signature = (st.st_mtime_ns, st.st_size)
            cached = self._lemma_cache.get(lang)
            if cached is not None and cached[0] == signature and cached[1] is wordlist:
                return cached[2]
            lemmas = load_lemmas(path, wordlist)
            self._lemma_cache[lang] = (signature, wordlist, lemmas)
            return lemmas

    def summary(self) -> list[dict]:
        """One entry per language for listing endpoints: `lang`, `n_words`, `sha256`, `file`.

        Only the file name is given, never the server's absolute path. A file that cannot be used
        is still listed, with `n_words` 0, `sha256` None and an `error` message, so one broken
        drop-in does not hide the others.
        """
        out: list[dict] = []
        for lang in self.languages():
            entry: dict = {"lang": lang, "file": f"{lang}.txt"}
            try:
                wl = self.get(lang)
            except WordlistNotFound:
                continue  # removed between listing and loading
            except WordlistError as exc:
                entry.update(n_words=0, sha256=None, error=str(exc))
            else:
                entry.update(n_words=len(wl), sha256=wl.sha256)
                entry.update(self._lemma_summary(lang))
            out.append(entry)
        return out

    def _lemma_summary(self, lang: str) -> dict:
        """`units` a request may count in, and the headword list's size when there is one."""
        from .lemmas import LemmaListNotFound

        try:
            lemmas = self.lemmas(lang)
        except LemmaListNotFound:
            return {"units": ["word"]}
        except WordlistError as exc:
            return {"units": ["word"], "lemma_error": str(exc)}
        return {
            "units": ["word", "lemma"],
            "n_lemmas": len(lemmas),
            "lemmas_file": f"lemmas/{lang}.tsv",
            "lemmas_sha256": lemmas.sha256,
        }
