"""The independent re-check of an answer, and the plain-text rules of streaming and trimming.

`check` is what makes a response's `violations` worth reading: it shares nothing with the
grammar (no trie, no regex, no automaton, no token mask), only a whitespace split, a punctuation
strip and set lookups, so a bug in the grammar or a backend shows up here instead of hiding. It
reads the same character sets (`constraints.separators`) and the same capitalization rule
(`lists.capitalized`) as the grammar: those define the answer, they do not enforce it.

`split_words`, `releasable` and `finalize` are the same kind of plain-text functions.
"""

from __future__ import annotations

from ..separators import CLOSE_SET, NON_TERMINAL, OPEN_SET, PUNCT_SET
from .lists import capitalized

__all__ = ["check", "finalize", "releasable", "split_words"]


def _piece_ok(piece: str, allowed: frozenset[str] | set[str], caps: bool) -> bool:
    if piece in allowed:
        return True
    if not caps or not piece[:1].isupper():
        return False
    low = piece[0].lower() + piece[1:]
    return low != piece and low in allowed and capitalized(low) == piece


def _segment(core: str, allowed: frozenset[str] | set[str], caps: bool) -> list[str] | None:
    """Split `core` into clitics + one final word, all allowed; None when impossible."""
    if not core.endswith("'") and _piece_ok(core, allowed, caps):
        return [core]
    for i, ch in enumerate(core[:-1]):
        if ch == "'":
            head = core[: i + 1]
            if _piece_ok(head, allowed, caps):
                rest = _segment(core[i + 1 :], allowed, caps)
                if rest is not None:
                    return [head, *rest]
    return None


def _parse_chunk(
    chunk: str, allowed: frozenset[str] | set[str], caps: bool
) -> tuple[list[str], str] | None:
    """(words, core) of a whitespace-free chunk `OPEN* words CLOSE*`, or None."""
    n = len(chunk)
    lead = 0
    while lead < n and chunk[lead] in OPEN_SET:
        lead += 1
    trail = 0
    while trail < n - lead and chunk[n - 1 - trail] in CLOSE_SET:
        trail += 1
    # Strip as much punctuation as possible first; an entry may itself end in `.` (or, in a
    # hand-made list, start with a quote), so fall back to shorter strips.
    for i in range(lead, -1, -1):
        for j in range(trail, -1, -1):
            core = chunk[i : n - j]
            if core:
                words = _segment(core, allowed, caps)
                if words is not None:
                    return words, core
    return None


def _chunks(text: str) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of non-whitespace characters."""
    out = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        j = i
        while j < n and not text[j].isspace():
            j += 1
        out.append((i, j))
        i = j
    return out


def _stripped(chunk: str) -> str:
    i, j = 0, len(chunk)
    while i < j and chunk[i] in OPEN_SET:
        i += 1
    while j > i and chunk[j - 1] in CLOSE_SET:
        j -= 1
    return chunk[i:j]


def split_words(
    text: str,
    allowed_words: frozenset[str] | set[str] | None = None,
    allow_capitalized: bool = True,
) -> list[str]:
    """The words of `text`, split the way the grammar splits them.

    Whitespace separates chunks; punctuation-only chunks hold no word; opening and closing
    punctuation around a chunk is not part of its word. With `allowed_words`, a chunk is split
    further into its clitics and final word (`l'homme` -> `l'`, `homme`) when that makes every
    piece a list word; an unknown chunk is returned as one word (its stripped core).
    """
    words: list[str] = []
    for s, e in _chunks(text):
        chunk = text[s:e]
        if all(ch in PUNCT_SET for ch in chunk):
            continue
        if allowed_words is not None:
            parsed = _parse_chunk(chunk, allowed_words, allow_capitalized)
            if parsed is not None:
                words.extend(parsed[0])
                continue
        words.append(_stripped(chunk) or chunk)
    return words


def check(
    text: str, allowed_words: frozenset[str] | set[str], allow_capitalized: bool = True
) -> list[str]:
    """Violations of the vocabulary rule in `text` (empty when every word is allowed).

    Independent of the trie, the regex and the token masks: whitespace split, punctuation strip,
    set lookups. A word is allowed when it is in the set, or when it is the capitalized form of
    a word in the set (first letter lower-cased gives a list word). Digits, symbols and any other
    non-word chunk are violations. Separators are not re-validated beyond that: this checks what
    the answer says, the grammar checks how it is laid out.
    """
    out = []
    for s, e in _chunks(text):
        chunk = text[s:e]
        if all(ch in PUNCT_SET for ch in chunk):
            continue
        if _parse_chunk(chunk, allowed_words, allow_capitalized) is None:
            out.append(f"not in the word list: {(_stripped(chunk) or chunk)!r}")
    return out


def _terminal(chunk: str) -> bool:
    """Could an answer end with this (complete) chunk? Not when it is only opening punctuation or
    a dash, which announce a word that has not come yet."""
    return any(ch not in NON_TERMINAL for ch in chunk)


def releasable(text: str) -> int:
    """How many leading characters of a growing `text` are final.

    Everything up to the end of the last chunk that is followed by whitespace and could end an
    answer. The trailing chunk may still grow into another word (or be trimmed by `finalize`),
    and the whitespace before it may still turn out to be dangling, so both are held back.
    Monotone: as `text` grows, the returned prefix only grows.
    """
    for s, e in reversed(_chunks(text)):
        if e < len(text) and _terminal(text[s:e]):
            return e
    return 0


def finalize(
    text: str,
    complete: bool,
    allowed_words: frozenset[str] | set[str],
    allow_capitalized: bool = True,
) -> str:
    """The answer to return for a finished generation.

    If the last chunk is cut (no whitespace after it) and is not a valid ending by itself (a list
    word with its punctuation, or closing punctuation), it is removed: `Hola, ¿qu` -> `Hola,`,
    while `casa` stays even if the model was heading for `casas`. Then trailing whitespace,
    opening punctuation and dashes are dropped. A complete answer (ended by end-of-sequence, so
    the grammar already put it at a word boundary) is unchanged by this; a text cut by
    `max_tokens`, a stop string or cancellation (`complete=False`) is trimmed. The result always
    starts with `text[:releasable(text)]`.
    """
    del complete  # same rule either way; the grammar makes it a no-op on complete answers
    chunks = _chunks(text)
    end = len(text)
    if chunks and chunks[-1][1] == end:
        s, e = chunks[-1]
        chunk = text[s:e]
        ok = all(ch in CLOSE_SET for ch in chunk) and len(chunks) > 1
        if not ok:
            parsed = _parse_chunk(chunk, allowed_words, allow_capitalized)
            ok = parsed is not None and _terminal(chunk)
        if not ok:
            chunks.pop()
            end = s
    while chunks and not _terminal(text[chunks[-1][0] : chunks[-1][1]]):
        chunks.pop()
    return text[: chunks[-1][1]] if chunks else ""
