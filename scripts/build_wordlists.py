#!/usr/bin/env python
"""Build the shipped frequency-ranked word lists `wordlists/<lang>.txt` and their headword files
`wordlists/lemmas/<lang>.tsv` from wordfreq's data.

wordfreq ships its frequency tables inside the package, and simplemma its dictionaries, so this
runs offline and is reproducible for given wordfreq and simplemma versions. Each list is cleaned
with the loader's own `normalize_word` (so the files load unchanged), restricted to Latin-script
words, purged of words of the other languages, and cut to the most frequent `--size` words.

French and Italian need one more step. wordfreq's tokenizer cuts an elision of one or two letters
before a vowel (`l'homme` -> `l` + `homme`) but keeps longer ones whole (`dell'anno`,
`jusqu'à`). Neither form lets the vocabulary express elision in general, so both are
re-segmented into a clitic entry ending in an apostrophe (`l'`, `dell'`, `jusqu'`), which the
grammar writes attached to the next word, plus the following word. The clitic takes the frequency
of the tokens it comes from, so it ranks where wordfreq ranks the elided article.

Words of other languages. wordfreq's tables for one language also count text written in another
(English above all: titles, names, quotes, code-switching on social media), so `the` ranked 306th
in Spanish. Every table is compared with the other five; the rule and its measured thresholds are
described in wordlists/README.md ("Words of other languages") and implemented by `ForeignFilter`.

Usage: python scripts/build_wordlists.py [--langs es en ...] [--size 50000] [--out DIR]
                                         [--no-lemmas]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
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
#: Every list is checked against the tables of all of these, whichever lists are being built.
COMPARED_LANGS = DEFAULT_LANGS


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
        "com", "org", "net", "edu", "gov", "info", "biz", "io", "co", "ly", "me", "tv", "fm", "gl",
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


# --- wordfreq tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One language's clean wordfreq table: normalized entry -> summed frequency."""

    lang: str
    freq: dict[str, float]
    #: wordfreq rank of the first token that contributed to an entry: breaks frequency ties.
    first_rank: dict[str, int]

    def ranked(self) -> list[str]:
        """All entries, most frequent first, ties in wordfreq's order."""
        return sorted(self.freq, key=lambda w: (-self.freq[w], self.first_rank[w], w))


def load_table(lang: str, wordlist: str = "large") -> Table:
    """wordfreq's table for `lang`, normalized, filtered and re-segmented as described above."""
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
    return Table(lang, freq, first_rank)


# --- lemmas (simplemma) ------------------------------------------------------------------------


#: A lemma at least this many times rarer than its form in wordfreq's table is not trusted.
LEMMA_MAX_RARITY = 100.0


class Lemmatizer:
    """simplemma's lemma of a list entry, normalized like an entry.

    The lemma is `normalize_word(simplemma.lemmatize(form, lang))`; the form itself when
    simplemma's dictionary does not know the form (its rule-based guesses for unknown words are
    not used), when the lemma is not a word, or when the lemma is more than `LEMMA_MAX_RARITY`
    times rarer than the form in the language's table: simplemma's dictionaries hold stems that
    are no words (en `playing` -> `playe`, `developed` -> `develope`) and pick a rare verb for
    a frequent noun (pt `começo` -> `comedir`, it `aggiunto` -> `aggiuntare`). An elided clitic
    (`l'`) is its own lemma. German lemmas are written with `ss` for `ß`, like the German list
    (wordfreq folds `ß`), so that `groß` (from `grosse`) and `gross` are one headword, and a
    German `ss` is also looked up as `ß` (see `spellings`).
    """

    def __init__(self, lang: str, table: Table) -> None:
        try:
            import simplemma
        except ImportError:  # pragma: no cover - depends on the environment
            raise SystemExit(
                "simplemma is needed to build the lists: pip install 'simplemma>=2.0,<3'"
            ) from None
        self.lang = lang
        self.freq = table.freq
        self._simplemma = simplemma
        self._cache: dict[str, str] = {}

    def is_known(self, form: str) -> bool:
        return self._simplemma.is_known(form, self.lang)

    def spellings(self, form: str) -> list[str]:
        """The spellings to look up: German `ss` may stand for `ß` (`strasse` is `Straße`, which
        simplemma knows, while it reads `strasse` as a form of `Strass`)."""
        if self.lang != "de" or "ss" not in form:
            return [form]
        parts = form.split("ss")
        variants = [form, "ß".join(parts)]
        for i in range(1, len(parts)):
            variants.append("ss".join(parts[:i]) + "ß" + "ss".join(parts[i:]))
        return list(dict.fromkeys(variants))

    def __call__(self, form: str) -> str:
        cached = self._cache.get(form)
        if cached is not None:
            return cached
        lemma, best = form, -1.0
        if not form.endswith("'"):
            f_form = self.freq.get(form, 0.0)
            for spelling in self.spellings(form):
                if not self.is_known(spelling):
                    continue
                found = normalize_word(self._simplemma.lemmatize(spelling, lang=self.lang))
                if found is None:
                    continue
                if self.lang == "de":
                    found = found.replace("ß", "ss")
                f_found = self.freq.get(found, 0.0)
                # Of several readings the most frequent lemma wins; the first on a tie.
                if f_found * LEMMA_MAX_RARITY >= f_form and f_found > best:
                    lemma, best = found, f_found
        self._cache[form] = lemma
        return lemma


# --- words of other languages ------------------------------------------------------------------

#: Frequent function words of each language. The median of `f_source(w) / f_target(w)` over
#: those that are at least `REFERENCE_MIN_RATIO` times more frequent in the source than in the
#: target (Spanish `que`, `para`, `como` are Portuguese too, so they do not count for es -> pt)
#: is the *leak level* of source into target: the ratio an unmistakable source word shows once
#: source-language text mixed into the target's corpora is all that the target counts of it.
FUNCTION_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("the", "of", "and", "to", "you", "is", "that", "with", "this", "for", "it", "are",
           "have"),
    "es": ("que", "los", "las", "del", "por", "para", "una", "pero", "como", "muy"),
    "fr": ("les", "des", "est", "pour", "une", "avec", "sont", "dans", "qui", "mais"),
    "de": ("und", "der", "ist", "nicht", "mit", "ich", "sich", "auch", "den", "dem"),
    "it": ("che", "della", "sono", "una", "questo", "anche", "molto", "gli", "nel", "delle"),
    "pt": ("não", "uma", "para", "com", "os", "dos", "muito", "mais", "são", "também"),
}  # fmt: skip
REFERENCE_MIN_RATIO = 20.0

# English in the other lists (rule 1 in the README). r = f_en(w) / f_lang(w).
#: Below this ratio a word is never taken for English: loans the languages use (es `online`
#: 2.8, de `team` 2.8, `show` 7.4) and most names stay below it, while at 8 to 16 English words
#: and name parts dominate (es `black`, `city`, `news`). The English function words are at 47
#: and above (pt `for`, a Portuguese word, at 25).
ENGLISH_RATIO = 8.0
#: A word the target uses far more than English leakage explains is kept: its ratio, divided by
#: the target's English leak level, is at least this many times lower than the median of the
#: same quantity in the four other non-English languages (`he` in Spanish: 73 times, German
#: `see` 5.2, Portuguese `for` 4.6; the English function words 0.7 to 1.8, German `is` 2.7,
#: Portuguese `to`, the informal spelling of `tô`, 3.4). English words about the target's own
#: countries pass it too (es `mexican`, fr `canadian`): a known, small cost.
CROSS_EXCESS = 4.0
#: Below this ratio a word simplemma knows as an inflected form of a frequent word of the
#: target is kept (es `has` -> haber, `come` -> comer; pt `for` -> ser). Above it simplemma's
#: dictionaries are not trusted: they list English words as Spanish, German or Portuguese forms
#: (pt `to` -> estar at 48, `i` -> ir at 39, fr `come` -> comme at 76).
LEMMA_GUARD_MAX_RATIO = 32.0

# Every other pair (rule 2): a word is dropped when its frequency in a source language,
# relative to its frequency in the target, reaches this share of the source's leak level.
LEAK_SHARE = 0.5

#: Decisions the rules get wrong, each checked by hand among the first 20,000 entries of the
#: tables: words of the language that rule 1 drops because an English homograph dominates their
#: frequency (German `not` "need", `last` "burden"; French `case` "box"; Italian `minute`
#: "tiny"; Portuguese `some` "disappears"; Spanish `use`, subjunctive of usar) ...
KEEP: dict[str, frozenset[str]] = {
    "es": frozenset({"use", "ratio"}),
    "de": frozenset({"not", "last", "real", "final", "legal", "major", "division", "fund"}),
    "fr": frozenset({"case", "multiple", "plant", "sole", "pale", "facial", "racial", "tribal"}),
    "it": frozenset({"minute", "multiple", "favorite"}),
    "pt": frozenset({"some"}),
}
#: ... and English words that a guard keeps by mistake: simplemma reads Italian `man`, `men` as
#: forms of mano, meno and German `end` as a form of enden; French text uses `french` (French
#: Tech) far more than the other languages do.
DROP: dict[str, frozenset[str]] = {
    "de": frozenset({"end"}),
    "fr": frozenset({"french"}),
    "it": frozenset({"man", "men"}),
}


def leak_level(source: Table, target: Table) -> float:
    ratios = []
    for word in FUNCTION_WORDS[source.lang]:
        f_target = target.freq.get(word, 0.0)
        ratio = source.freq[word] / f_target if f_target else float("inf")
        if ratio >= REFERENCE_MIN_RATIO:
            ratios.append(ratio)
    return statistics.median(ratios)


class ForeignFilter:
    """Decides which entries of one language's table belong to another language."""

    def __init__(self, lang: str, tables: dict[str, Table], lemmatizer: Lemmatizer) -> None:
        self.lang = lang
        self.tables = tables
        self.table = tables[lang]
        self.lemmatizer = lemmatizer
        self.english = tables["en"]
        self.others = [x for x in COMPARED_LANGS if x not in (lang, "en")]
        # Rule 2: sources and their leak levels into this language.
        sources = [x for x in COMPARED_LANGS if x != lang and (lang == "en" or x != "en")]
        self.leak = {x: leak_level(tables[x], self.table) for x in sources}
        # Rule 1: each non-English language's English leak level (for the cross-language test).
        self.english_level = {
            x: leak_level(self.english, tables[x]) for x in COMPARED_LANGS if x != "en"
        }

    def english_ratio(self, word: str, lang: str) -> float:
        f = self.tables[lang].freq.get(word, 0.0)
        return self.english.freq.get(word, 0.0) / f if f else float("inf")

    def cross_excess(self, word: str) -> float:
        """How much more the target uses `word`, relative to English, than the other languages
        do, each measured against its own English leak level."""
        own = self.english_ratio(word, self.lang) / self.english_level[self.lang]
        others = [self.english_ratio(word, x) / self.english_level[x] for x in self.others]
        return statistics.median(others) / own

    def lemma_guard(self, word: str) -> str | None:
        """The lemma when simplemma knows `word` as a form of a frequent word of the target."""
        lemma = self.lemmatizer(word)
        f_lemma = self.table.freq.get(lemma, 0.0)
        if (
            lemma != word
            and f_lemma >= self.table.freq[word] / 2
            and self.english_ratio(lemma, self.lang) < 1
        ):
            return lemma
        return None

    def verdict(self, word: str) -> str | None:
        """The language `word` is taken from, or None when it belongs to the target."""
        if word in KEEP.get(self.lang, ()):
            return None
        if word in DROP.get(self.lang, ()):
            return "listed"
        f = self.table.freq[word]
        for source, level in self.leak.items():
            if self.tables[source].freq.get(word, 0.0) / f >= LEAK_SHARE * level:
                return source
        if self.lang == "en":
            return None
        ratio = self.english_ratio(word, self.lang)
        if ratio < ENGLISH_RATIO or self.cross_excess(word) >= CROSS_EXCESS:
            return None
        if ratio < LEMMA_GUARD_MAX_RATIO and self.lemma_guard(word) is not None:
            return None
        return "en"


@dataclass
class BuiltList:
    lang: str
    words: list[str]
    #: Entries skipped on the way down to the `size`-th kept word, with the source language.
    removed: dict[str, str]


def build(lang: str, size: int, tables: dict[str, Table], lemmatizer: Lemmatizer) -> BuiltList:
    """The `size` most frequent clean words of `lang` that belong to it, most frequent first."""
    foreign = ForeignFilter(lang, tables, lemmatizer)
    words: list[str] = []
    removed: dict[str, str] = {}
    for word in tables[lang].ranked():
        source = foreign.verdict(word)
        if source is not None:
            removed[word] = source
            continue
        words.append(word)
        if len(words) == size:
            return BuiltList(lang, words, removed)
    raise SystemExit(f"{lang}: only {len(words)} clean words, fewer than the {size} asked")


# --- headword files ----------------------------------------------------------------------------


def build_lemmas(
    words: list[str], table: Table, lemmatizer: Lemmatizer
) -> list[tuple[str, list[str]]]:
    """Headwords with their forms, most frequent first.

    Every entry stands under its lemma; an entry that is itself the lemma of another entry is
    also listed under its own headword (es `vino` -> venir, and headword of `vinos`). A headword
    ranks by the summed frequency of the forms listed under it; ties go to the one whose first
    form ranks first, then to the smaller lemma string. Forms keep the list's order.
    """
    primary = {w: lemmatizer(w) for w in words}
    heads = set(primary.values())
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(primary[w], []).append(w)
        if w in heads and primary[w] != w:
            groups.setdefault(w, []).append(w)
    rank = {w: i for i, w in enumerate(words)}
    score = {h: sum(table.freq[f] for f in forms) for h, forms in groups.items()}
    order = sorted(groups, key=lambda h: (-score[h], rank[groups[h][0]], h))
    return [(h, groups[h]) for h in order]


def lemma_header(lang: str, wordlist: str) -> list[str]:
    return [
        f"# Headwords of wordlists/{lang}.txt, most frequent first: lemma<TAB>forms, the forms "
        f"being entries of {lang}.txt in its rank order.",
        f"# Built by scripts/build_wordlists.py from wordfreq {version('wordfreq')} ({wordlist}) "
        f"and simplemma {version('simplemma')}.",
        f"# Lemma: simplemma.lemmatize(form, lang={lang!r}) normalized like a list entry; the form "
        f"itself when simplemma does not know it or the lemma is over {LEMMA_MAX_RARITY:.0f} times "
        "rarer than the form; an elided clitic is its own lemma"
        + ("; ss is also read as ß, and lemmas write ß as ss" if lang == "de" else "")
        + ". An entry that is the lemma of another entry is also listed under its own headword.",
        "# Rank: summed wordfreq frequency of the forms listed (ties: earlier first form, then "
        "lemma). CC BY-SA 4.0, derived from wordfreq: see wordlists/README.md.",
    ]


def write_lemmas(path: Path, header: list[str], lemmas: list[tuple[str, list[str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = header + [f"{lemma}\t{' '.join(forms)}" for lemma, forms in lemmas]
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")


def check_lemmas(path: Path, words: list[str]) -> int:
    """Reads a written lemma file back: every form an entry, every entry a form, forms in the
    list's order, no headword twice. Returns the number of headwords."""
    rank = {w: i for i, w in enumerate(words)}
    covered: set[str] = set()
    heads: set[str] = set()
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        if line.startswith("#"):
            continue
        lemma, forms_field = line.split("\t")
        forms = forms_field.split(" ")
        if lemma in heads or normalize_word(lemma) != lemma:
            raise SystemExit(f"{path}: bad or repeated headword {lemma!r}")
        if any(f not in rank for f in forms) or forms != sorted(forms, key=rank.__getitem__):
            raise SystemExit(f"{path}: forms of {lemma!r} are not entries in list order")
        heads.add(lemma)
        covered.update(forms)
    if len(covered) != len(words):
        raise SystemExit(f"{path}: {len(words) - len(covered)} entries under no headword")
    return len(heads)


def coverage(lemmas: list[tuple[str, list[str]]], n: int) -> int:
    """How many distinct entries the forms of the first `n` headwords are."""
    return len({f for _, forms in lemmas[:n] for f in forms})


# --- output ------------------------------------------------------------------------------------


def write_list(path: Path, words: list[str]) -> None:
    """UTF-8, one word per line, `\\n` line ends, final newline (the hashed canonical form)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(words) + "\n")


def _examples(words: Iterable[str], limit: int = 12) -> str:
    shown = list(words)
    more = f" ... (+{len(shown) - limit})" if len(shown) > limit else ""
    return " ".join(shown[:limit]) + more


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", nargs="+", default=list(DEFAULT_LANGS))
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="words per list")
    parser.add_argument("--out", type=Path, default=default_wordlist_dir())
    parser.add_argument("--wordlist", default="large", choices=("large", "best"))
    parser.add_argument("--no-lemmas", action="store_true", help="skip lemmas/<lang>.tsv")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.langs) - set(COMPARED_LANGS))
    if unknown:
        parser.error(f"no rules for {', '.join(unknown)}; known: {', '.join(COMPARED_LANGS)}")

    total_start = time.perf_counter()
    tables = {lang: load_table(lang, args.wordlist) for lang in COMPARED_LANGS}
    print(f"wordfreq tables read in {time.perf_counter() - total_start:.1f}s")
    for lang in args.langs:
        start = time.perf_counter()
        lemmatizer = Lemmatizer(lang, tables[lang])
        built = build(lang, args.size, tables, lemmatizer)
        path = args.out / f"{lang}.txt"
        write_list(path, built.words)
        # The file must load unchanged: same words, same order, so the same hash.
        loaded = load_wordlist(path, lang)
        if list(loaded.words) != built.words:
            raise SystemExit(f"{lang}: {path} does not load back unchanged")
        by_source = Counter(built.removed.values())
        sources = ", ".join(f"{src} {n}" for src, n in by_source.most_common())
        print(
            f"{lang}: {len(built.words)} words -> {path} (sha256 {loaded.sha256[:12]}); "
            f"{len(built.removed)} words of other languages skipped ({sources or 'none'})"
        )
        for src, _ in by_source.most_common():
            print(f"  {src}: {_examples(w for w, s in built.removed.items() if s == src)}")
        if not args.no_lemmas:
            lemmas = build_lemmas(built.words, tables[lang], lemmatizer)
            lemma_file = args.out / "lemmas" / f"{lang}.tsv"
            write_lemmas(lemma_file, lemma_header(lang, args.wordlist), lemmas)
            if check_lemmas(lemma_file, built.words) != len(lemmas):
                raise SystemExit(f"{lang}: {lemma_file} does not read back unchanged")
            covered = ", ".join(
                f"top {n}: {coverage(lemmas, n)}" for n in (1000, 3000, 5000) if n <= len(lemmas)
            )
            print(f"  {len(lemmas)} lemmas -> {lemma_file} (forms covered by the {covered})")
        print(f"  {time.perf_counter() - start:.1f}s")
    print(
        f"wordfreq {version('wordfreq')}, simplemma {version('simplemma')}, "
        f"total {time.perf_counter() - total_start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
