"""Trie of a word list -> compact regular expression + minimized trie (DAWG), in one pass.

The regex is the documented form of the vocabulary (alternations factored by shared suffix,
`c[ao]sas?`, character classes, optional groups) and what llguidance compiles; the DAWG is the
same language as a graph, walked character by character by the answer automaton.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..separators import char_class, escape
from .lists import capitalized

__all__ = ["DEAD", "Dawg", "build_trie", "trie_regex"]

#: Automaton state (or DAWG node) of a dead (rejected) prefix.
DEAD = -1


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


def build_trie(words: Sequence[str], caps: bool) -> dict:
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


def trie_regex(root: dict) -> tuple[str, Dawg]:
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
            rx = escape(ch) + sub_rx
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
            head = escape(chars[0]) if len(chars) == 1 else char_class(chars)
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
