"""An independent word checker for tests: reads the list file itself, shares no code with the
grammar, the trie or the server's own re-check."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORD = re.compile(r"[^\W\d_]+(?:['’.\-·][^\W\d_]+)*'?", re.UNICODE)


@lru_cache(maxsize=32)
def top_words(lang: str, n: int, directory: str = str(REPO / "wordlists")) -> frozenset[str]:
    lines = Path(directory, f"{lang}.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(unicodedata.normalize("NFC", w.strip()) for w in lines[:n])


@lru_cache(maxsize=32)
def top_lemma_forms(lang: str, n: int, directory: str = str(REPO / "wordlists")) -> frozenset[str]:
    """Every form of the `n` most frequent headwords of wordlists/lemmas/<lang>.tsv
    (`lemma<TAB>form form ...`, most frequent first, `#` lines are comments)."""
    path = Path(directory, "lemmas", f"{lang}.tsv")
    forms: set[str] = set()
    taken = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if taken == n:
            break
        taken += 1
        _, _, rest = line.partition("\t")
        forms.update(unicodedata.normalize("NFC", f) for f in rest.split())
    return frozenset(forms)


def _ok(token: str, allowed: frozenset[str]) -> bool:
    if token in allowed:
        return True
    if token[:1].isupper() and token[:1].lower() + token[1:] in allowed:
        return True
    # An elided clitic written attached to the next word: l'homme, dell'anno.
    if "'" in token[:-1]:
        head, _, tail = token.partition("'")
        return _ok(head + "'", allowed) and _ok(tail, allowed)
    return False


def violations(text: str, lang: str, n: int, unit: str = "word") -> list[str]:
    """Words of `text` that are not among the first `n` lines of wordlists/<lang>.txt, or with
    `unit="lemma"` not a form of the first `n` headwords of wordlists/lemmas/<lang>.tsv."""
    allowed = top_lemma_forms(lang, n) if unit == "lemma" else top_words(lang, n)
    text = unicodedata.normalize("NFC", text).replace("’", "'")
    bad = [tok for tok in WORD.findall(text) if not _ok(tok, allowed)]
    if re.search(r"\d", text):
        bad.append("<digit>")
    return bad


def words(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFC", text))
