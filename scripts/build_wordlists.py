#!/usr/bin/env python
"""Build the shipped frequency-ranked word lists `wordlists/<lang>.txt` from wordfreq's data.

wordfreq ships its frequency tables inside the package, so this runs offline and is reproducible
for a given wordfreq version. Each list is cleaned with the loader's own `normalize_word` (so the
files load unchanged), restricted to Latin-script words, and cut to the most frequent `--size`
words.

French and Italian need one more step. wordfreq's tokenizer cuts an elision of one or two letters
before a vowel (`l'homme` -> `l` + `homme`) but keeps longer ones whole (`dell'anno`,
`jusqu'à`). Neither form lets the vocabulary express elision in general, so both are
re-segmented into a clitic entry ending in an apostrophe (`l'`, `dell'`, `jusqu'`), which the
grammar writes attached to the next word, plus the following word. The clitic takes the frequency
of the tokens it comes from, so it ranks where wordfreq ranks the elided article.

Usage: python scripts/build_wordlists.py [--langs es en ...] [--size 50000] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import wordfreq

from wordlist_generation.constraints.wordlist.lists import (
    default_wordlist_dir,
    load_wordlist,
    normalize_word,
)

DEFAULT_LANGS = ("es", "en", "fr", "de", "it", "pt")
DEFAULT_SIZE = 50_000


@dataclass(frozen=True)
class Elision:
    """How one language's elided clitics are re-segmented.

    `stems` are the clitics without their apostrophe: a token `stem'rest` is split into `stem'`
    and `rest`. The bare token `stem` (what wordfreq leaves of a short elision) is handled by
    the sets below; a stem in neither is a word of its own whose token is left alone.
    """

    stems: frozenset[str]
    #: Bare tokens that exist only as the clitic: renamed to `stem'` (no bare `l` in French).
    replace: frozenset[str]
    #: Bare tokens that count both the clitic and a real word (Italian `un` / `un'altra`): the
    #: word stays and the clitic is added with the same frequency, since wordfreq cannot tell
    #: the two apart.
    share: frozenset[str]


_FR_REPLACE = frozenset(
    {"l", "d", "j", "n", "s", "m", "c", "qu", "jusqu", "lorsqu", "puisqu", "quoiqu"}
)
# `t` stays a word too: wordfreq also cuts the euphonic t of `a-t-il`, `va-t-on` at the hyphens.
_FR_SHARE = frozenset({"t"})

_IT_REPLACE = frozenset(
    {
        "l", "d", "c", "m", "t", "s", "v", "n",
        "dell", "all", "nell", "dall", "sull", "coll",
        "quest", "quell", "anch", "com", "cos", "dov", "quand", "quant", "tant",
        "tutt", "sant", "mezz", "senz", "nient", "qualcos", "qualcun", "bell", "sott",
        "gliel", "dev",
        "vent", "trent", "quarant", "cinquant", "sessant", "settant", "ottant", "novant",
    }
)  # fmt: skip
_IT_SHARE = frozenset({"un"})
# Words in their own right that also elide (`nessun'altra`, `buon'anima`, `cent'anni`).
_IT_KEEP = frozenset({"nessun", "buon", "cent"})

ELISIONS: dict[str, Elision] = {
    "fr": Elision(stems=_FR_REPLACE | _FR_SHARE, replace=_FR_REPLACE, share=_FR_SHARE),
    "it": Elision(stems=_IT_REPLACE | _IT_SHARE | _IT_KEEP, replace=_IT_REPLACE, share=_IT_SHARE),
}


def _is_orthographic_latin(ch: str) -> bool:
    """A Latin letter used in spelling (`é`, `œ`): not an IPA symbol, small capital, fullwidth
    form or typographic ligature (`ﬁ`), which in wordfreq's social-media data come from emoticons
    (`( ͡° ͜ʖ ͡°)`) and decorated text."""
    name = unicodedata.name(ch, "")
    if not name.startswith(("LATIN SMALL LETTER ", "LATIN SMALL LIGATURE ")):
        return False
    code = ord(ch)
    return not (0x0250 <= code <= 0x02AF or 0x1D00 <= code <= 0x1DBF or 0xFB00 <= code <= 0xFB4F)


def is_latin(word: str) -> bool:
    """True when every letter is Latin script: the shipped languages are written in it, and
    wordfreq's tables also hold stray words in other scripts (names, quotes) that do not belong
    to the language's vocabulary. Normalized words are lowercase, hence "SMALL LETTER"."""
    return all(unicodedata.category(ch)[0] != "L" or _is_orthographic_latin(ch) for ch in word)


#: Last labels that make a dotted token a web address (`gmail.com`, `t.co`, `index.php`) rather
#: than an abbreviation (`ee.uu`, `z.b`, `dott.ssa`): wordfreq's web and social-media sources are
#: full of them, and they are not vocabulary.
WEB_SUFFIXES = frozenset(
    {
        "com", "org", "net", "edu", "gov", "info", "biz", "io", "co", "ly", "me", "tv", "fm",
        "es", "fr", "de", "it", "pt", "br", "uk", "eu", "at", "ch", "be", "nl", "mx", "ar", "cl",
        "php", "html", "htm", "asp", "jpg", "png", "gif", "pdf", "exe", "txt",
    }
)  # fmt: skip


def is_web_address(word: str) -> bool:
    """True for host names and file names, which wordfreq keeps as single tokens."""
    return "." in word and word.rsplit(".", 1)[1] in WEB_SUFFIXES


def segment(word: str, elision: Elision | None) -> Iterator[str]:
    """The vocabulary entries one normalized token contributes to."""
    if elision is not None:
        while "'" in word:
            stem, _, rest = word.partition("'")
            rest_norm = normalize_word(rest) if rest else None
            if stem not in elision.stems or rest_norm is None:
                break
            yield stem + "'"
            word = rest_norm
        if word in elision.replace:
            word += "'"
    yield word


def build(lang: str, size: int, wordlist: str = "large") -> list[str]:
    """The `size` most frequent clean words of `lang`, most frequent first."""
    elision = ELISIONS.get(lang)
    freq: dict[str, float] = {}
    first_rank: dict[str, int] = {}

    def add(word: str, f: float, rank: int) -> None:
        freq[word] = freq.get(word, 0.0) + f
        first_rank.setdefault(word, rank)

    # The dict is in wordfreq's rank order; that order breaks ties between equal frequencies.
    for rank, (raw, f) in enumerate(wordfreq.get_frequency_dict(lang, wordlist=wordlist).items()):
        word = normalize_word(raw)
        if word is None or not is_latin(word) or is_web_address(word):
            continue
        for entry in segment(word, elision):
            add(entry, f, rank)
            if elision is not None and entry in elision.share:
                add(entry + "'", f, rank)

    ranked = sorted(freq, key=lambda w: (-freq[w], first_rank[w], w))
    if len(ranked) < size:
        raise SystemExit(f"{lang}: only {len(ranked)} clean words, fewer than the {size} asked")
    return ranked[:size]


def write_list(path: Path, words: list[str]) -> None:
    """UTF-8, one word per line, `\\n` line ends, final newline (the hashed canonical form)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(words) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", nargs="+", default=list(DEFAULT_LANGS))
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="words per list")
    parser.add_argument("--out", type=Path, default=default_wordlist_dir())
    parser.add_argument("--wordlist", default="large", choices=("large", "best"))
    args = parser.parse_args(argv)

    total_start = time.perf_counter()
    for lang in args.langs:
        start = time.perf_counter()
        words = build(lang, args.size, args.wordlist)
        path = args.out / f"{lang}.txt"
        write_list(path, words)
        # The file must load unchanged: same words, same order, so the same hash.
        loaded = load_wordlist(path, lang)
        if list(loaded.words) != words:
            raise SystemExit(f"{lang}: {path} does not load back unchanged")
        print(
            f"{lang}: {len(words)} words -> {path} "
            f"(sha256 {loaded.sha256[:12]}, {time.perf_counter() - start:.1f}s)"
        )
    print(f"wordfreq {version('wordfreq')}, total {time.perf_counter() - total_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
