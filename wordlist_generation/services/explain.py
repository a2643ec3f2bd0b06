"""What the web page asks about sounds and words, as plain data (no HTTP here).

* `phoneme_inventory`: the English inventory with its ASCII and ARPAbet spellings, features and one
  familiar example word per position, so a phoneme picker can show `/ʃ/ as in "she"`.
* `explain_words`: why each word of an answer is allowed: its rank in the word list, or its
  pronunciations and the constraints it serves.

Explanations read the same compiled constraint as the generation (usually a cache hit), so they
are the server's own account of each word. They are not the proof of an answer: that remains the
independent re-check in the answer's `constraint` report.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..constraints.phonology import Lexicon, PhonologicalConstraint, answer_words
from ..constraints.phonology.phonemes import (
    ARPABET_TO_IPA,
    CONSONANT_FEATURES,
    EXCLUSION_IMPLIES,
    INVENTORY,
    PHONEME_ALIASES,
    POSITIONS,
    UNSTRESSED_IPA,
    VOWELS,
    count_syllables,
    pron_to_ipa,
)
from ..constraints.wordlist import Wordlist, capitalized
from ..constraints.wordlist.lemmas import LemmaList

#: ARPAbet spelling of each IPA symbol (the stress-split vowels carry their stress digit).
_ARPABET: dict[str, str] = {ipa: arpa for arpa, ipa in ARPABET_TO_IPA.items()} | {
    "ʌ": "AH1",
    "ɝ": "ER1",
    **{ipa: f"{arpa}0" for arpa, ipa in UNSTRESSED_IPA.items()},
}

#: Constraint types that only let words through (every word is judged against them).
_FILTERS = ("exclude", "bound", "bound_boost")


def _first(mask: np.ndarray, words: Sequence[str]) -> str | None:
    """The most frequent word where `mask` holds (the lexicon is sorted by frequency)."""
    i = int(np.argmax(mask)) if mask.size else 0
    return words[i] if mask.size and mask[i] else None


def phoneme_inventory(lexicon: Lexicon) -> dict[str, Any]:
    """Every phoneme of the inventory, vowels first, with what a picker needs to show it."""
    a = lexicon.arrays
    data = []
    for bit, ipa in enumerate(INVENTORY):
        m = np.uint64(1 << bit)
        entry: dict[str, Any] = {
            "ipa": ipa,
            "kind": "vowel" if ipa in VOWELS else "consonant",
            "ascii": [k for k, v in PHONEME_ALIASES.items() if v == ipa and k.isascii()]
            + ([ipa] if ipa.isascii() else []),
            "arpabet": _ARPABET[ipa],
            "examples": {
                "initial": _first(a.first_bit == bit, a.words),
                "medial": _first((a.medial_mask & m) != 0, a.words),
                "final": _first(a.last_bit == bit, a.words),
            },
            "n_words": int(((a.any_mask & m) != 0).sum()),
            "features": asdict(CONSONANT_FEATURES[ipa]) if ipa in CONSONANT_FEATURES else None,
        }
        if ipa in EXCLUSION_IMPLIES:
            entry["excluding_also_excludes"] = list(EXCLUSION_IMPLIES[ipa])
        data.append(entry)
    return {
        "object": "list",
        "data": data,
        "positions": list(POSITIONS),
        "lexicon": lexicon.describe(),
    }


# ---------------------------------------------------------------------------------- word lists


def _list_form(word: str) -> str:
    return unicodedata.normalize("NFC", word).replace("\u2019", "'")


def _lookup(form: str, ranks: dict[str, int]) -> tuple[int | None, str]:
    """(1-based rank, how the word was found): as listed, or the capitalized form of a list word."""
    if form in ranks:
        return ranks[form], "listed"
    low = form[:1].lower() + form[1:]
    if low != form and low in ranks and capitalized(low) == form:
        return ranks[low], "capitalized"
    return None, "absent"


def _list_entry(word: str, ranks: dict[str, int], n_words: int, heads: Sequence[str]) -> dict:
    """One word's rank and verdict; `heads` are the headwords when ranks count headwords
    (lemma unit), empty when they count list entries."""
    form = _list_form(word)
    rank, how = _lookup(form, ranks)
    entry: dict[str, Any] = {"word": word, "form": form, "rank": rank, "in_list": rank is not None}
    if rank is None and "'" in form[:-1]:
        # An elided clitic written onto the next word (l'homme): each part is a list word.
        head, _, tail = form.partition("'")
        parts = [_list_entry(p, ranks, n_words, heads) for p in (head + "'", tail)]
        if all(p["in_list"] for p in parts):
            entry.update(parts=parts, in_list=True, allowed=all(p["allowed"] for p in parts))
            entry["reason"] = "elided clitic + word: " + "; ".join(p["reason"] for p in parts)
            return entry
    entry["allowed"] = rank is not None and rank <= n_words
    unit = "headwords" if heads else "words"
    if rank is None:
        entry["reason"] = "not in the list"
    else:
        where = "within" if entry["allowed"] else "outside"
        if heads:
            entry["lemma"] = heads[rank - 1]
            entry["reason"] = f"a form of '{heads[rank - 1]}', headword {rank:,}: "
        else:
            entry["reason"] = f"rank {rank:,} in the list: "
        entry["reason"] += f"{where} the first {n_words:,} {unit}"
        if how == "capitalized":
            entry["reason"] += " (capitalized form)"
    return entry


def explain_list_words(
    wordlist: Wordlist, n_words: int, words: Sequence[str], lemmas: LemmaList | None = None
) -> dict[str, Any]:
    """Rank of each word in `wordlist` (1 = most frequent) and whether it is within `n_words`;
    with `lemmas`, the best rank of a headword the word is a form of, counted in headwords."""
    if lemmas is None:
        ranks = {w: i for i, w in enumerate(wordlist.words, 1)}
        heads: Sequence[str] = ()
        sha, size = wordlist.sha256_top(n_words), len(wordlist)
    else:
        ranks, heads = lemmas.form_ranks(), lemmas.lemmas
        sha, size = lemmas.sha256, len(lemmas)
    return {
        "object": "words.explanation",
        "mode": "wordlist",
        "vocab_lang": wordlist.lang,
        "vocab_n_words": n_words,
        "unit": "lemma" if lemmas is not None else "word",
        "list_size": size,
        "sha256": sha,
        "data": [_list_entry(w, ranks, n_words, heads) for w in words],
    }


# -------------------------------------------------------------------------------------- sounds


def _norm_value(norm: str, word: str, pron: list[str] | None, zipf: float | None) -> float | None:
    if norm == "letters":
        return float(len(word.replace("'", "")))
    if norm == "zipf":
        return zipf
    if pron is None:
        return None
    return float(len(pron) if norm == "phonemes" else count_syllables(pron))


def _targets(verdict: dict[str, Any], word: str) -> str | None:
    """How `word` serves a positive constraint, read from the re-check's details (or None)."""
    details = verdict["details"]
    if word in details.get("words", ()):
        return "a required sound at the required position"
    for key, what in (("pairs_found", "minimal pair"), ("sets_found", "minimal set")):
        for group in details.get(key, ()):
            if word in group:
                return f"{what} {' / '.join(group)}"
    if details.get("required_words", details.get("suggested", {})).get(word):
        return "one of the words the answer must use"
    return None


def _filter_role(c: Any, verdict: dict[str, Any], word: str, values: dict[str, Any]) -> dict:
    if c.type == "exclude":
        hit = verdict["details"]["offending"].get(word)
        return {
            "ok": hit is None,
            "detail": f"contains /{hit}/" if hit else f"no /{' '.join(c.effective_phonemes)}/",
        }
    value = values[c.norm]
    shown = "unknown" if value is None else f"{value:g}"
    return {"ok": c.value_in_range(value), "detail": f"{c.norm} {shown}"}


def _sound_entry(
    word: str,
    constraint: PhonologicalConstraint,
    verdicts: dict[int, dict[str, Any]],
    required: set[str],
) -> dict[str, Any]:
    import wordfreq

    lexicon, solution = constraint.lexicon, constraint.solution
    found = answer_words(word)
    form = found[0] if len(found) == 1 else word.lower()
    prons = [pron_to_ipa(p)[0] for p in lexicon.raw_pronunciations(form)]
    rank = lexicon.word_index.get(form)
    zipf = wordfreq.zipf_frequency(form, "en") if len(found) == 1 else None
    first = prons[0] if prons else None
    values = {
        n: _norm_value(n, form, first, zipf) for n in ("letters", "zipf", "phonemes", "syllables")
    }
    allowed = rank is not None and bool(solution.allowed[rank])
    roles = []
    for i, c in enumerate(solution.constraints):
        role: dict[str, Any] = {"constraint_index": i, "type": c.type, "label": c.label()}
        if c.type in _FILTERS:
            role |= {"role": "soft" if c.type == "bound_boost" else "filter"}
            role |= _filter_role(c, verdicts[i], form, values)
        else:
            how = _targets(verdicts[i], form)
            if how is None:
                continue
            role |= {"role": "target", "ok": True, "detail": how}
        roles.append(role)
    entry = {
        "word": word,
        "form": form,
        "allowed": allowed,
        "rank": None if rank is None else rank + 1,
        "zipf": zipf,
        "pronunciations": [" ".join(p) for p in prons],
        "syllables": values["syllables"],
        "required": form in required,
        "constraints": roles,
    }
    if not prons:
        entry["reason"] = "not in the pronunciation dictionary"
    elif rank is None:
        entry["reason"] = "too rare for the lexicon"
    elif not allowed:
        entry["reason"] = "outside the allowed vocabulary"
    else:
        serves = [r["label"] for r in roles if r["role"] == "target"]
        entry["reason"] = f"rank {rank + 1:,} of {lexicon.size:,} words; /{' '.join(prons[0])}/" + (
            f"; serves {', '.join(serves)}" if serves else ""
        )
    return entry


def explain_sound_words(constraint: PhonologicalConstraint, words: Sequence[str]) -> dict[str, Any]:
    """Pronunciations of each word and, per constraint, whether it passes or what it serves.

    The roles come from the independent re-check of the words taken together (a minimal pair is
    a relation between two words), so they say what the re-check of an answer made of them says.
    """
    solution = constraint.solution
    distinct = list(dict.fromkeys(w for word in words for w in answer_words(word)))
    checked = constraint.verdicts(" ".join(distinct))
    verdicts = {v.constraint_index: v.to_json() for v in checked if v.constraint_index is not None}
    required = set(solution.required_words())
    return {
        "object": "words.explanation",
        "mode": "phonological",
        "vocab_n_words": solution.vocab_n_words,
        "vocabulary": solution.vocabulary_json(),
        "constraints": [
            {"constraint_index": i, "type": c.type, "label": c.label()}
            for i, c in enumerate(solution.constraints)
        ],
        "required_words": solution.required_words(),
        "data": [_sound_entry(w, constraint, verdicts, required) for w in words],
    }
