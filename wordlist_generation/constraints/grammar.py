"""Compiling a word list into the grammar of a whole answer, and the plain-text rules around it.

The vocabulary restriction is enforced token by token during decoding, so it has to be a formal
language over characters. This module defines that language once and builds three equivalent
forms of it from one trie of the list:

- a compact regular expression (`answer_regex`, `lark_grammar`): trie -> alternations factored by
  shared suffix (`c[ao]sas?`), character classes, optional groups. This is the documented
  mechanism, and the form llguidance consumes;
- a character automaton (`AnswerAutomaton`): the same trie, minimized into a DAWG, walked one
  character at a time. lm-format-enforcer consumes it as a `CharacterLevelParser` (its own regex
  FSM needs about a minute for 10,000 words), and the llguidance backend uses its states as exact
  cache keys for token masks that repeat;
- nothing else: the text functions at the end (`check`, `split_words`, `releasable`, `finalize`)
  deliberately do not use the trie or the regex, so that `check` is an independent re-check.

## What the grammar allows

An answer is a sequence of *words* separated by *gaps*, optionally opened by *lead* punctuation
and closed by *tail* punctuation:

    answer  = lead? word (gap word)* tail?
    word    = clitic* entry                      -- no separator inside a word
    lead    = (OPEN " "?){1,2}
    gap     = close? (" " DASH)? BREAK lead?
    tail    = close
    close   = (" "? CLOSE){1,4}
    BREAK   = " " | "\\n" | "\\n\\n"

- `entry` is one of the first N lines of the list, or its *capitalized form*: the first character
  upper-cased when that gives a single, different character (`hola` -> `Hola`, `i` -> `I`,
  `haus` -> `Haus`). Only the first character: `HOLA` and `hOla` are not allowed. The lowercase
  word must itself be in the list.
- `clitic` is a list entry ending in an apostrophe (`l'`, `qu'`, `dell'`), written directly
  before the next word: `l'homme`, `qu'il`, `L'Italia`, `dell'anno`. A clitic can never end the
  answer or stand before a separator. An entry ending in `'` is a clitic in every language.
- Characters inside an entry (`'`, `-`, `.`, `·` in `don't`, `e-mail`, `ee.uu`) are allowed only
  as part of that entry: `hola.adiós`, `casa-perro` and `don'` are not words.
- `OPEN` = `¿ ¡ ( [ « " “ „ — –` (before a word), `CLOSE` = `. , ; : ! ? … ) ] » " ” “`
  (after a word), `DASH` = `- – —` (only as a spaced dash: `word - word`, `word, — word`).
  Single quotes are not punctuation: `'` only exists inside entries (`don't`, `l'`), and `‘ ’`
  would be read as apostrophes by any word splitter (the lists fold `’` into `'`).
  Runs are bounded: at most 2 opening and 4 closing characters (`...?`, `?!»`, `."`).
- A space may stand before each closing and after each opening punctuation character (French
  typography: `« Bonjour ! »`, `Quoi ?`), still within the run bounds.
- Whitespace is one space, one line break or one paragraph break (`\\n\\n`) between words, never
  more, never a tab, never at the start or the end of the answer.
- No digits, symbols (`# * / % & + = @ _ < >`), emoji, list markers (`1.`, `- item`, `* item`)
  or markup: they are not words and not in the punctuation sets.
- The answer may end (end-of-sequence is allowed) only after a complete word or after closing
  punctuation, never inside a word, after a clitic, after whitespace or after opening
  punctuation.

`GrammarOptions` can switch off capitalized forms and line breaks and change the run bounds; the
defaults are the description above.

List entries without any letter, or containing whitespace or control characters, are ignored
(the shipped lists, cleaned by `normalize_word`, contain none).
"""

from __future__ import annotations

import gc
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CLOSING",
    "DASHES",
    "DEAD",
    "GRAMMAR_VERSION",
    "OPENING",
    "AnswerAutomaton",
    "CompiledWords",
    "Dawg",
    "GrammarOptions",
    "answer_regex",
    "capitalized",
    "check",
    "compile_words",
    "finalize",
    "lark_grammar",
    "releasable",
    "split_entries",
    "split_words",
]

#: Bump whenever the language defined here changes: it is part of every compiled-constraint key.
GRAMMAR_VERSION = 1

#: Punctuation that may open a word (Spanish inverted marks, brackets, opening quotes, dialogue
#: dashes). `"` and `“` are both opening and closing quotes (`„…“` in German, `“…”` in English).
OPENING = '¿¡([«"“„—–'
#: Punctuation that may follow a word.
CLOSING = '.,;:!?…)]»"”“'
#: Dashes, allowed between words only with a space before them (`palabra - palabra`).
DASHES = "-–—"

_OPEN_SET = frozenset(OPENING)
_CLOSE_SET = frozenset(CLOSING)
_DASH_SET = frozenset(DASHES)
_PUNCT_SET = _OPEN_SET | _CLOSE_SET | _DASH_SET
#: Characters that do not make a chunk (a run without whitespace) a possible end of an answer.
_NON_TERMINAL = _OPEN_SET | _DASH_SET

#: Automaton state of a dead (rejected) prefix.
DEAD = -1


@dataclass(frozen=True)
class GrammarOptions:
    """Knobs of the answer grammar; hashable, part of the compiled-constraint cache key."""

    #: Allow the capitalized form of every entry (`Hola`, `I`, German nouns).
    allow_capitalized: bool = True
    #: Allow a line break between words (otherwise a single space only).
    allow_newlines: bool = True
    #: Allow a paragraph break (`\n\n`) between words (needs `allow_newlines`).
    allow_paragraphs: bool = True
    #: Longest run of opening punctuation before a word (`¿¡`, `«"`).
    max_opening: int = 2
    #: Longest run of closing punctuation after a word (`...?`, `?!»`).
    max_closing: int = 4
    #: Allow one space before closing punctuation (`Quoi ?`, `« oui »`).
    space_before_closing: bool = True

    def __post_init__(self) -> None:
        if self.max_opening < 1 or self.max_closing < 1:
            raise ValueError("max_opening and max_closing must be >= 1")


# --------------------------------------------------------------------------------------------
# Entries and capitalization
# --------------------------------------------------------------------------------------------


def capitalized(word: str) -> str | None:
    """The word with its first character upper-cased, or None when that is not a distinct single
    character (already upper case, no case, or `ß` -> `SS`)."""
    if not word:
        return None
    first = word[0]
    upper = first.upper()
    if len(upper) != 1 or upper == first:
        return None
    return upper + word[1:]


def _usable(entry: str) -> bool:
    if entry.isalpha():  # the common case, decided without a per-character loop
        return True
    if not entry or not any(ch.isalpha() for ch in entry):
        return False
    return not any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in entry)


def split_entries(words: Iterable[str]) -> tuple[list[str], list[str]]:
    """(full words, clitics) of a list, unusable entries dropped, order kept, duplicates removed.

    A clitic is an entry ending in an apostrophe; it must be followed directly by another word.
    """
    seen: set[str] = set()
    full: list[str] = []
    clitics: list[str] = []
    for w in words:
        if w in seen or not _usable(w):
            continue
        seen.add(w)
        (clitics if w.endswith("'") and len(w) > 1 else full).append(w)
    return full, clitics


# --------------------------------------------------------------------------------------------
# Trie -> regex and DAWG
# --------------------------------------------------------------------------------------------

#: Regex metacharacters of both Python's `re` and Rust's `regex-syntax` (which llguidance uses);
#: escaping exactly these keeps the expression valid in both.
_META = frozenset("\\.+*?()|[]{}^$#&-~/")


def _esc(ch: str) -> str:
    if ch in _META:
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    return ch


def _char_class(chars: Iterable[str]) -> str:
    return "[" + "".join(_esc(c) for c in sorted(set(chars))) + "]"


@dataclass(frozen=True)
class Dawg:
    """A minimized trie (directed acyclic word graph): equal sub-tries are one node.

    Node 0 is the root. `children[n]` maps a character to the next node; `final[n]` says an entry
    ends at `n`. Immutable after construction, shared by every sequence of a constraint.
    """

    children: tuple[dict[str, int], ...]
    final: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.children)

    def contains(self, word: str) -> bool:
        node = 0
        for ch in word:
            node = self.children[node].get(ch, DEAD)
            if node == DEAD:
                return False
        return self.final[node]


def _build_trie(words: Sequence[str], caps: bool) -> dict:
    """Nested dicts, `""` marking the end of an entry; capitalized forms share the sub-trie of
    their first letter (merged when the list also has an upper-case entry)."""
    root: dict = {}
    for w in words:
        node = root
        for ch in w:
            nxt = node.get(ch)
            if nxt is None:
                nxt = node[ch] = {}
            node = nxt
        node[""] = True
    if caps:
        for ch in [c for c in root if c]:
            up = capitalized(ch)
            if up is None:
                continue
            if up in root:
                root[up] = _merged(root[up], root[ch])
            else:
                root[up] = root[ch]
    return root


def _merged(a: dict, b: dict) -> dict:
    """A new trie accepting the union of `a` and `b` (neither is modified: both may be shared)."""
    out = dict(a)
    for ch, sub in b.items():
        if ch == "":
            out[""] = True
        elif ch in out and out[ch] is not sub:
            out[ch] = _merged(out[ch], sub)
        else:
            out[ch] = sub
    return out


def _trie_to_regex(root: dict) -> tuple[str, Dawg]:
    """The regex of a trie and its DAWG, in one bottom-up pass.

    A sub-trie's regex is canonical (the trie of a finite language is unique and the rendering is
    deterministic), so equal regex strings mean equal sub-languages: the memo keyed by the string
    is exactly the DAWG minimization, and siblings with equal suffix regexes merge into one
    character class (`c[ao]sa`).
    """
    ids: dict[str, int] = {}
    children: list[dict[str, int]] = []
    final: list[bool] = []
    by_obj: dict[int, tuple[str, int]] = {}

    # A leaf (an entry no other entry extends) is half of all trie nodes: one shared node,
    # recognized inline rather than by a recursive call.
    ids["1"] = 0
    children.append({})
    final.append(True)
    leaf = ("", 0)

    def rec(node: dict) -> tuple[str, int]:
        hit = by_obj.get(id(node))
        if hit is not None:
            return hit
        end = "" in node
        if len(node) - end == 1:  # one child (chains are most inner nodes): no grouping needed
            ch = next(c for c in node if c)
            sub = node[ch]
            sub_rx, sub_id = leaf if len(sub) == 1 and "" in sub else rec(sub)
            kids = {ch: sub_id}
            rx = _esc(ch) + sub_rx
            if end:
                rx = rx + "?" if not sub_rx else "(?:" + rx + ")?"
            return _intern_node(node, end, rx, kids)
        groups: dict[str, list[str]] = {}
        kids = {}
        for ch, sub in node.items():
            if ch == "":
                continue
            sub_rx, sub_id = leaf if len(sub) == 1 and "" in sub else rec(sub)
            kids[ch] = sub_id
            groups.setdefault(sub_rx, []).append(ch)
        alts = []
        for sub_rx, chars in groups.items():
            head = _esc(chars[0]) if len(chars) == 1 else _char_class(chars)
            alts.append(head + sub_rx)
        alts.sort()
        if not alts:
            rx = ""
        elif len(alts) == 1 and not end:
            rx = alts[0]
        elif len(alts) == 1 and len(groups) == 1 and "" in groups:
            rx = alts[0] + "?"  # one character or one class: `?` applies to it directly
        else:
            rx = "(?:" + "|".join(alts) + ")" + ("?" if end else "")
        return _intern_node(node, end, rx, kids)

    def _intern_node(node: dict, end: bool, rx: str, kids: dict[str, int]) -> tuple[str, int]:
        key = ("1" if end else "0") + rx  # "" (a leaf) differs from an empty non-final root
        nid = ids.get(key)
        if nid is None:
            nid = ids[key] = len(children)
            children.append(kids)
            final.append(end)
        by_obj[id(node)] = (rx, nid)
        return rx, nid

    rx, root_id = rec(root)
    # Renumber so that the root is node 0 (ids were handed out bottom-up).
    order = [root_id] + [i for i in range(len(children)) if i != root_id]
    new_id = {old: new for new, old in enumerate(order)}
    dawg = Dawg(
        children=tuple({ch: new_id[c] for ch, c in children[old].items()} for old in order),
        final=tuple(final[old] for old in order),
    )
    return rx, dawg


@dataclass(frozen=True)
class CompiledWords:
    """Everything compiled from one list: the regexes of full words and clitics and their DAWGs."""

    full_regex: str
    clitic_regex: str | None
    full: Dawg
    clitic: Dawg | None
    options: GrammarOptions
    #: The usable entries, in list order (full words, then clitics).
    full_words: tuple[str, ...]
    clitic_words: tuple[str, ...]

    @property
    def n_full(self) -> int:
        return len(self.full_words)

    @property
    def n_clitics(self) -> int:
        return len(self.clitic_words)


def compile_words(
    words: Sequence[str], options: GrammarOptions = GrammarOptions()
) -> CompiledWords:
    """Trie -> regex + DAWG for the full words and the clitics of `words`.

    The garbage collector is paused meanwhile: the trie is hundreds of thousands of small dicts,
    and collections triggered by their allocation would double the time for nothing.
    """
    full, clitics = split_entries(words)
    if not full:
        raise ValueError("the word list has no usable word")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        full_rx, full_dawg = _trie_to_regex(_build_trie(full, options.allow_capitalized))
        clitic_rx = clitic_dawg = None
        if clitics:
            clitic_rx, clitic_dawg = _trie_to_regex(_build_trie(clitics, options.allow_capitalized))
    finally:
        if was_enabled:
            gc.enable()
    return CompiledWords(
        full_regex=full_rx,
        clitic_regex=clitic_rx,
        full=full_dawg,
        clitic=clitic_dawg,
        options=options,
        full_words=tuple(full),
        clitic_words=tuple(clitics),
    )


def _pieces(options: GrammarOptions) -> dict[str, str]:
    o, c = options.max_opening, options.max_closing
    opening = _char_class(OPENING)
    closing = _char_class(CLOSING)
    if options.allow_newlines:
        brk = "(?: |\\n\\n?)" if options.allow_paragraphs else "(?: |\\n)"
    else:
        brk = " "
    open_run = f"(?:{opening} ?){{1,{o}}}"
    if options.space_before_closing:
        close_run = f"(?: ?{closing}){{1,{c}}}"
    else:
        close_run = f"{closing}{{1,{c}}}"
    return {
        "lead": open_run,
        "gap": f"(?:{close_run})?(?: {_char_class(DASHES)})?{brk}(?:{open_run})?",
        "tail": close_run,
    }


def answer_regex(cw: CompiledWords) -> str:
    """The whole answer as one regular expression (valid for Python's `re` and for llguidance)."""
    p = _pieces(cw.options)
    word = f"(?:{cw.full_regex})"
    if cw.clitic_regex is not None:
        word = f"(?:{cw.clitic_regex})*" + word
    return f"(?:{p['lead']})?{word}(?:{p['gap']}{word})*(?:{p['tail']})?"


def lark_grammar(cw: CompiledWords) -> str:
    """The same language as `answer_regex`, as an llguidance Lark grammar.

    One terminal (`ANSWER`) is the whole answer, so lexing is the regular expression itself (no
    lexer/parser interplay to reason about); naming the word regex once and referring to it twice
    halves what llguidance parses compared with the flat regex.

    `no_forcing` keeps every valid token in the masks: by default, where the grammar forces the
    next bytes (`mañ` can only go on as `ana`), llguidance allows only the tokenizer's own
    tokenization of them (`ana`, not `a` or `an`). That would make its masks differ from
    lm-format-enforcer's and push a model towards tokens it may find unlikely.
    """
    p = _pieces(cw.options)
    lines = [
        '%llguidance {"no_forcing": true}',
        "start: ANSWER",
        "ANSWER: LEAD? WORD (GAP WORD)* TAIL?",
        "WORD: CLITIC* FULL" if cw.clitic_regex is not None else "WORD: FULL",
        f"FULL: /{cw.full_regex}/",
    ]
    if cw.clitic_regex is not None:
        lines.append(f"CLITIC: /{cw.clitic_regex}/")
    lines += [f"LEAD: /{p['lead']}/", f"GAP: /{p['gap']}/", f"TAIL: /{p['tail']}/"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Character automaton
# --------------------------------------------------------------------------------------------

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
        if ch in _OPEN_SET:
            if self._opens(p):
                out.add(self._o)
            elif self._o <= p < self._f0:  # O_k or OS_k: one more opening character
                k = (p - self._o) % o.max_opening + 1
                if k < o.max_opening:
                    out.add(self._o + k)
        if p == _A0:
            if ch == " ":
                out.add(_ASP)
            elif ch in _CLOSE_SET:
                out.add(self._c)
            elif newline:
                out.add(_N1)
        elif p == _ASP:
            if ch in _CLOSE_SET and o.space_before_closing:
                out.add(self._c)
            if ch in _DASH_SET:
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
            if ch in _CLOSE_SET and k < o.max_closing:
                out.add(self._c + k)
            elif ch == " ":
                out.add(self._cs + k - 1)
            elif newline:
                out.add(_N1)
        elif self._cs <= p < self._o:  # CS_k
            k = p - self._cs + 1
            if ch in _CLOSE_SET and k < o.max_closing and o.space_before_closing:
                out.add(self._c + k)
            if ch in _DASH_SET:
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
                cands.update(_PUNCT_SET)
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


# --------------------------------------------------------------------------------------------
# Plain-text functions (independent of the trie and the regex)
# --------------------------------------------------------------------------------------------


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
    while lead < n and chunk[lead] in _OPEN_SET:
        lead += 1
    trail = 0
    while trail < n - lead and chunk[n - 1 - trail] in _CLOSE_SET:
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
    while i < j and chunk[i] in _OPEN_SET:
        i += 1
    while j > i and chunk[j - 1] in _CLOSE_SET:
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
        if all(ch in _PUNCT_SET for ch in chunk):
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
        if all(ch in _PUNCT_SET for ch in chunk):
            continue
        if _parse_chunk(chunk, allowed_words, allow_capitalized) is None:
            out.append(f"not in the word list: {(_stripped(chunk) or chunk)!r}")
    return out


def _terminal(chunk: str) -> bool:
    """Could an answer end with this (complete) chunk? Not when it is only opening punctuation or
    a dash, which announce a word that has not come yet."""
    return any(ch not in _NON_TERMINAL for ch in chunk)


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
        ok = all(ch in _CLOSE_SET for ch in chunk) and len(chunks) > 1
        if not ok:
            parsed = _parse_chunk(chunk, allowed_words, allow_capitalized)
            ok = parsed is not None and _terminal(chunk)
        if not ok:
            chunks.pop()
            end = s
    while chunks and not _terminal(text[chunks[-1][0] : chunks[-1][1]]):
        chunks.pop()
    return text[: chunks[-1][1]] if chunks else ""
