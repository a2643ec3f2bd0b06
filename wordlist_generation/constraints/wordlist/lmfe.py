"""The lm-format-enforcer word-list backend (the reference).

Its core classes (`TokenEnforcer`, `TokenEnforcerTokenizerData`, `CharacterLevelParser`; its
transformers integration does not import on transformers 5.x) drive a trie-walking
`CharacterLevelParser` over the answer automaton. Its own regex FSM would need about a minute to
build at 10,000 words.

lm-format-enforcer works on decoded text, so it can never emit a token that is not complete
UTF-8 by itself. SmolLM2's tokenizer encodes ` ¿` as `[" \\xc2", "\\xbf"]`, and `¡` (alone or
after a space) only with such partial tokens: with this backend `¡` can never be written, and
` ¿` only through the non-canonical pair `" "` + `"¿"`. The same holds for several capital
letters with diacritics, which exist in no whole token or start none (`À Á È Í Ñ Ó Ú Ü Ä Ö Ç Ê
Î Ô Œ Ø Å Ì Ò`): `Él` is reachable, `Árbol`, `Über`, `Ça` or `Ñandú` are not. llguidance works on
bytes and has no such gap. Both accept the same *strings* (character-level acceptance); token by
token they differ exactly on tokenizations containing partial-UTF-8 tokens (pinned in tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..base import WARM_STOP, SequenceConstraint
from ..tokenizer import TokenizerTables
from .automaton import DEAD, AnswerAutomaton, separator_states
from .grammar import CompiledWords

__all__ = ["LmfeWordlist"]


def _lmfe_classes() -> tuple[type, type]:
    """The parser and enforcer classes, defined on first use so that importing this module does
    not import lm-format-enforcer."""
    from lmformatenforcer import CharacterLevelParser, TokenEnforcer

    class TrieParser(CharacterLevelParser):
        """A `CharacterLevelParser` walking the answer automaton (immutable: one state each)."""

        def __init__(self, automaton: AnswerAutomaton, state: int, config: Any = None) -> None:
            # The base __init__ builds a config from environment variables on every call; one
            # parser is created per character walked, so it is set directly instead.
            self._config = config
            self.automaton = automaton
            self.state = state

        def add_character(self, new_character: str) -> TrieParser:
            nxt = self.automaton.step(self.state, new_character)
            if nxt == DEAD:
                raise ValueError(f"character {new_character!r} not allowed here")
            return TrieParser(self.automaton, nxt, self._config)

        def get_allowed_characters(self) -> str:
            return self.automaton.allowed_chars(self.state)

        def can_end(self) -> bool:
            return self.automaton.accepting(self.state)

        def cache_key(self) -> int | None:
            return self.state if self.automaton.pure_separator(self.state) else None

    class MemoTokenEnforcer(TokenEnforcer):
        """`TokenEnforcer` whose token-tree walk memoizes sub-walks entered in a separator state.

        The stock walk caches only whole masks per `cache_key`; here, as in its own JSON-string
        shortcut, the sub-walk below a token-tree node entered in a separator state (after a
        word: `" "`, `","`, ...) is computed once per constraint and reused by every word end.
        """

        def __init__(self, tokenizer_data: Any, parser: Any, shared: _LmfeShared) -> None:
            super().__init__(tokenizer_data, parser)
            self._shared = shared
            self.allowed_token_cache = shared.full

        def _compute_allowed_tokens(self, state_tokens: tuple, state: Any) -> None:
            key = state.parser.cache_key()
            if key is not None:
                hit = self._shared.full.get(key)
                if hit is not None:
                    state.allowed_tokens = hit
                    return
            acc = _Allowed()
            self._walk(state.parser, self.tokenizer_tree.root, acc)
            acc.freeze()
            state.allowed_tokens = acc
            if key is not None:
                self._shared.full[key] = acc

        def _walk(self, parser: Any, node: Any, acc: _Allowed) -> None:
            key = parser.cache_key()
            if key is None:
                self._expand(parser, node, acc)
                return
            memo_key = (key, id(node))
            hit = self._shared.memo.get(memo_key)
            if hit is None:
                sub = _Allowed()
                self._expand(parser, node, sub)
                hit = sub.as_array()
                self._shared.memo[memo_key] = hit
            if hit.size:
                acc.chunks.append(hit)

        def _expand(self, parser: Any, node: Any, acc: _Allowed) -> None:
            acc.ids.extend(node.tokens)
            chars = parser.get_allowed_characters()
            children = node.children
            if len(chars) <= len(children):
                todo = [c for c in chars if c in children]
            else:
                todo = [c for c in children if c in chars]
            for c in todo:
                self._walk(parser.add_character(c), children[c], acc)

    return TrieParser, MemoTokenEnforcer


class _Allowed:
    """Allowed token ids of one state: loose ids plus shared sorted arrays from the memo."""

    __slots__ = ("chunks", "ids", "_small")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.chunks: list[np.ndarray] = []
        self._small: frozenset[int] = frozenset()

    def freeze(self) -> None:
        self._small = frozenset(self.ids)

    def as_array(self) -> np.ndarray:
        parts = [np.asarray(self.ids, dtype=np.int64), *self.chunks]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def __contains__(self, token: int) -> bool:
        if token in self._small:
            return True
        for arr in self.chunks:
            i = int(np.searchsorted(arr, token))
            if i < arr.size and arr[i] == token:
                return True
        return False

    def fill(self, allowed: torch.Tensor) -> None:
        n = allowed.shape[0]
        if self.ids:
            idx = torch.tensor([i for i in self.ids if i < n], dtype=torch.long)
            allowed[idx] = True
        for arr in self.chunks:
            allowed[torch.from_numpy(arr[arr < n])] = True

    def __bool__(self) -> bool:
        return bool(self.ids) or any(arr.size for arr in self.chunks)


@dataclass
class _LmfeShared:
    """Caches shared by every sequence of one lm-format-enforcer constraint."""

    full: dict
    memo: dict


class LmfeWordlist:
    """One word-list constraint for lm-format-enforcer."""

    def __init__(self, cw: CompiledWords, tables: TokenizerTables) -> None:
        self.tables = tables
        self.automaton = AnswerAutomaton(cw)
        self.cw = cw
        self._parser_cls, self._enforcer_cls = _lmfe_classes()
        self._data = tables.lmfe_data()
        self.shared = _LmfeShared(full={}, memo={})

    def parser(self) -> Any:
        return self._parser_cls(self.automaton, self.automaton.start)

    def warm(self, n_words: int, budget_s: float) -> None:
        """Fill the enforcer's shared caches: the masks of every separator state (each walks the
        token tree below a space, several seconds in all at 50,000 words), then the states
        along a text of the `n_words` most frequent words. Stops after `budget_s` seconds."""
        t0 = time.perf_counter()
        for state, _ in separator_states(self.automaton, self.cw):
            if time.perf_counter() - t0 > budget_s or WARM_STOP.is_set():
                return
            self._enforcer_cls(
                self._data, self._parser_cls(self.automaton, state), self.shared
            ).get_allowed_tokens([])
        seq = self.start()
        text = " ".join(self.cw.full_words[:n_words])
        for tok in self.tables.tokenizer.encode(text, add_special_tokens=False):
            if time.perf_counter() - t0 > budget_s or WARM_STOP.is_set() or not seq.advance(tok):
                return

    def start(self) -> _LmfeSequence:
        enforcer = self._enforcer_cls(self._data, self.parser(), self.shared)
        return _LmfeSequence(enforcer, ())

    def accepts(self, text: str) -> bool:
        """Character-level acceptance through the `CharacterLevelParser` interface."""
        p = self.parser()
        for ch in text:
            if ch not in p.get_allowed_characters():
                return False
            p = p.add_character(ch)
        return bool(p.can_end())


class _LmfeSequence(SequenceConstraint):
    """A sequence under lm-format-enforcer: the enforcer of its request and its token prefix
    (the enforcer keys its states by prefix, which is how it supports beams)."""

    __slots__ = ("_enf", "_tokens")

    def __init__(self, enforcer: Any, tokens: tuple[int, ...]) -> None:
        self._enf = enforcer
        self._tokens = tokens

    def _allowed(self) -> _Allowed:
        return self._enf.get_allowed_tokens(list(self._tokens))

    def fork(self) -> _LmfeSequence:
        return _LmfeSequence(self._enf, self._tokens)

    def advance(self, token_id: int) -> bool:
        if token_id not in self._allowed():
            return False
        self._tokens = (*self._tokens, token_id)
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        self._allowed().fill(allowed)

    def can_end(self) -> bool:
        self._allowed()
        return bool(self._enf.prefix_states[tuple(self._tokens)].parser.can_end())
