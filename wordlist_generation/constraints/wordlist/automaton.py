"""The answer language as a deterministic character automaton, built lazily from the DAWGs.

The same language as `grammar.answer_regex` (a test checks it): lm-format-enforcer walks it one
character at a time, and the llguidance backend uses its states as exact cache keys for token masks
that repeat (a state outside any word is one of a few hundred, whatever the list).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from ..separators import CLOSE_SET, DASH_SET, OPEN_SET, PUNCT_SET
from .grammar import CompiledWords
from .trie import DEAD

__all__ = ["DEAD", "AnswerAutomaton", "leaf_entry", "separator_states"]

# Positions of the separator part. A DFA state is a set of positions: separator positions and
# trie positions (offset node ids), determinized lazily.
_W = 0  # word start, opening punctuation allowed (answer start, after a completed break)
_A0 = 1  # right after a complete word (accepting)
_ASP = 2  # word + " " (break, space before closing punctuation, or space before a dash)
_D = 3  # " " + dash: a break must follow
_N1 = 4  # after "\n"
_N2 = 5  # after "\n\n"
_R = 6  # start of the next piece after a clitic (no punctuation, no whitespace)
_FIXED = 7
# Then, for k = 1..max: C_k (k closing characters, accepting), CS_k (C_k + " "),
# O_k (k opening characters), OS_k (O_k + " ").


class AnswerAutomaton:
    """Deterministic character automaton of the answer language, built lazily from the DAWGs.

    States are small integers; `step` memoizes transitions, so a long-running server converges to
    a table lookup per character. Thread-safe: interning new states takes a lock, everything else
    is reads of immutable data or idempotent dict writes.
    """

    def __init__(self, cw: CompiledWords) -> None:
        o = cw.options
        self.options = o
        self._full = cw.full
        self._clitic = cw.clitic
        c, op = o.max_closing, o.max_opening
        self._c = _FIXED  # C_k is _c + k - 1
        self._cs = self._c + c  # CS_k is _cs + k - 1
        self._o = self._cs + c  # O_k is _o + k - 1
        self._os = self._o + op  # OS_k is _os + k - 1
        self._f0 = self._os + op  # full-word DAWG node n is position _f0 + n
        self._l0 = self._f0 + len(cw.full)  # clitic DAWG node n is position _l0 + n
        self._lock = threading.Lock()
        self._sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self._trans: list[dict[str, int]] = []
        self._chars: list[str | None] = []
        self._info: list[tuple[bool, bool, frozenset[int]]] = []
        self.start = self._intern(frozenset((_W,)))

    # -- construction
    def _closure(self, positions: Iterable[int]) -> frozenset[int]:
        """Add what a finished entry leads to, and drop trie leaves (no transition left): a state
        right after a word that cannot grow is then a pure separator state, which is cached."""
        out = set()
        for p in positions:
            if p >= self._l0:
                assert self._clitic is not None
                node = p - self._l0
                if self._clitic.final[node]:
                    out.add(_R)
                if self._clitic.children[node]:
                    out.add(p)
            elif p >= self._f0:
                node = p - self._f0
                if self._full.final[node]:
                    out.add(_A0)
                if self._full.children[node]:
                    out.add(p)
            else:
                out.add(p)
        return frozenset(out)

    def _intern(self, positions: frozenset[int]) -> int:
        sid = self._ids.get(positions)
        if sid is not None:
            return sid
        with self._lock:
            sid = self._ids.get(positions)
            if sid is None:
                sid = len(self._sets)
                self._sets.append(positions)
                self._trans.append({})
                self._chars.append(None)
                accepting = _A0 in positions or any(self._c <= p < self._cs for p in positions)
                pure = all(p < self._f0 for p in positions)
                gaps = frozenset(p for p in positions if p < self._f0 and p != _R)
                self._info.append((accepting, pure, gaps))
                self._ids[positions] = sid
        return sid

    def _enters_word(self, p: int) -> bool:
        return p in (_W, _ASP, _N1, _N2, _R) or self._cs <= p < self._f0

    def _opens(self, p: int) -> bool:
        return p in (_W, _ASP, _N1, _N2) or self._cs <= p < self._cs + self.options.max_closing

    def _step_pos(self, p: int, ch: str, out: set[int]) -> None:
        o = self.options
        if p >= self._l0:
            nxt = self._clitic.children[p - self._l0].get(ch) if self._clitic else None
            if nxt is not None:
                out.add(self._l0 + nxt)
            return
        if p >= self._f0:
            nxt = self._full.children[p - self._f0].get(ch)
            if nxt is not None:
                out.add(self._f0 + nxt)
            return
        if self._enters_word(p):
            nxt = self._full.children[0].get(ch)
            if nxt is not None:
                out.add(self._f0 + nxt)
            if self._clitic is not None:
                nxt = self._clitic.children[0].get(ch)
                if nxt is not None:
                    out.add(self._l0 + nxt)
        newline = ch == "\n" and o.allow_newlines
        if ch in OPEN_SET:
            if self._opens(p):
                out.add(self._o)
            elif self._o <= p < self._f0:  # O_k or OS_k: one more opening character
                k = (p - self._o) % o.max_opening + 1
                if k < o.max_opening:
                    out.add(self._o + k)
        if p == _A0:
            if ch == " ":
                out.add(_ASP)
            elif ch in CLOSE_SET:
                out.add(self._c)
            elif newline:
                out.add(_N1)
        elif p == _ASP:
            if ch in CLOSE_SET and o.space_before_closing:
                out.add(self._c)
            if ch in DASH_SET:
                out.add(_D)
        elif p == _D:
            if ch == " ":
                out.add(_W)
            elif newline:
                out.add(_N1)
        elif p == _N1:
            if newline and o.allow_paragraphs:
                out.add(_N2)
        elif self._c <= p < self._cs:  # C_k
            k = p - self._c + 1
            if ch in CLOSE_SET and k < o.max_closing:
                out.add(self._c + k)
            elif ch == " ":
                out.add(self._cs + k - 1)
            elif newline:
                out.add(_N1)
        elif self._cs <= p < self._o:  # CS_k
            k = p - self._cs + 1
            if ch in CLOSE_SET and k < o.max_closing and o.space_before_closing:
                out.add(self._c + k)
            if ch in DASH_SET:
                out.add(_D)
        elif self._o <= p < self._os:  # O_k
            if ch == " ":
                out.add(self._os + p - self._o)

    # -- queries
    def step(self, state: int, ch: str) -> int:
        """The state after `ch`, or `DEAD`."""
        if state == DEAD:
            return DEAD
        trans = self._trans[state]
        nxt = trans.get(ch)
        if nxt is None:
            out: set[int] = set()
            for p in self._sets[state]:
                self._step_pos(p, ch, out)
            nxt = self._intern(self._closure(out)) if out else DEAD
            trans[ch] = nxt
        return nxt

    def run(self, text: str, state: int | None = None) -> int:
        """The state after `text` from `state` (the start by default), or `DEAD`."""
        s = self.start if state is None else state
        for ch in text:
            s = self.step(s, ch)
            if s == DEAD:
                return DEAD
        return s

    def accepts(self, text: str) -> bool:
        """Is `text` a complete answer?"""
        s = self.run(text)
        return s != DEAD and self.accepting(s)

    def accepting(self, state: int) -> bool:
        """May the answer end here?"""
        return state != DEAD and self._info[state][0]

    def pure_separator(self, state: int) -> bool:
        """True when no position of `state` is inside a word: such states are few and repeat, so
        their token masks are worth caching."""
        return self._info[state][1]

    def separator_key(self, state: int) -> frozenset[int]:
        """The separator positions of `state` (what whitespace-initial tokens depend on)."""
        return self._info[state][2]

    def allowed_chars(self, state: int) -> str:
        """Every character with a live transition from `state`."""
        cached = self._chars[state]
        if cached is not None:
            return cached
        cands: set[str] = set()
        for p in self._sets[state]:
            if p >= self._l0:
                cands.update(self._clitic.children[p - self._l0] if self._clitic else ())
            elif p >= self._f0:
                cands.update(self._full.children[p - self._f0])
            else:
                if self._enters_word(p):
                    cands.update(self._full.children[0])
                    if self._clitic is not None:
                        cands.update(self._clitic.children[0])
                cands.update(PUNCT_SET)
                cands.update(" \n")
        chars = "".join(sorted(c for c in cands if self.step(state, c) != DEAD))
        self._chars[state] = chars
        return chars

    def positions(self, state: int) -> frozenset[int]:
        """The raw position set (for tests and diagnostics)."""
        return self._sets[state]

    @property
    def n_states(self) -> int:
        return len(self._sets)


def separator_states(a: AnswerAutomaton, cw: CompiledWords) -> list[tuple[int, str]]:
    """Every pure separator state reachable through punctuation, whitespace and one
    representative word and clitic, with a shortest text leading to it (breadth first)."""
    reps = [w for w in (leaf_entry(a, cw.full_words[:2000]), leaf_entry(a, cw.clitic_words)) if w]
    pieces = sorted(PUNCT_SET | {" ", "\n"}) + reps
    out = [(a.start, "")]
    seen = {a.start}
    i = 0
    while i < len(out) and len(out) < 512:
        state, text = out[i]
        i += 1
        for piece in pieces:
            nxt = a.run(piece, state)
            if nxt != DEAD and nxt not in seen and a.pure_separator(nxt):
                seen.add(nxt)
                out.append((nxt, text + piece))
    return out


def leaf_entry(a: AnswerAutomaton, words: Sequence[str]) -> str | None:
    """An entry after which the automaton is in a pure separator state (it cannot continue)."""
    for w in words:
        s = a.run(w)
        if s != DEAD and a.pure_separator(s):
            return w
    return None
