"""The llguidance word-list backend (the default): the trie -> regex grammar with exact, cached masks.

llguidance compiles the grammar in a fraction of a second. A token mask is computed by walking
the tokenizer's token trie through the grammar; after a complete word that walk visits every
token starting with a space (32,000 of SmolLM2's 49,152): about 1 ms per mask at 50,000 words on
a small CPU. `LlguidanceWordlist` removes that cost exactly: the decoding matcher sees the
vocabulary with the whitespace of whitespace-initial tokens split off (cheap masks inside words;
see `TokenizerTables`), and the whitespace-initial part of a mask, which depends only on the
separator positions of the automaton state, is cached per constraint, as are whole masks of
states outside any word.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ..base import WARM_STOP
from ..bitmask import copy_into, zeros
from ..llg import LlguidanceSequence, accepts_tokens, matcher_mask, new_matcher
from ..tokenizer import TokenizerTables
from .automaton import DEAD, AnswerAutomaton, separator_states
from .grammar import CompiledWords, lark_grammar

log = logging.getLogger(__name__)

__all__ = ["LlguidanceWordlist"]


class LlguidanceWordlist:
    """One word-list constraint for llguidance, with exact mask decompositions.

    The decoding matcher runs over the split vocabulary (`TokenizerTables.ll_split`), so its mask
    covers exactly the tokens that do not start with whitespace, and computing it inside a word
    walks only tokens that continue the word. For the whitespace-initial tokens: entries contain
    no whitespace, so a whitespace byte is only ever allowed from a separator position, and the
    state after it (`S·w`) is a pure separator state that depends only on the separator
    positions of S (the "separator key"). A token `w + rest` is allowed in S iff `rest` is
    allowed in `S·w`, which the split matcher's mask at `S·w` says (bit of that token id).
    Hence, exactly:

        mask(S) = split_mask(S) & ~ws  |  ws_part(separator key of S)
        ws_part = OR over whitespace prefixes w live from S of
                  split_mask(S·w) & tokens(w + something)  |  tokens(exactly w)

    `ws_part` is cached per separator key, the split masks of pure separator states per state,
    and states made only of separator positions (after punctuation, at a word start) are cached
    whole. All keys are exact automaton states (the automaton is tested equivalent to the
    regex); the caches fill on first use and are warmed after compilation (`warm`).
    `exact_mask` computes the same without the automaton or any cache: the tests compare the two
    on every step.

    The grammar text (`grammar`) is character-level and assumes nothing about tokens: only this
    class compiles it over the split vocabulary; over the tokenizer's own vocabulary
    (`llg.compile_lark`) it gives the same masks, without the caches.
    """

    def __init__(self, cw: CompiledWords, tables: TokenizerTables) -> None:
        self.tables = tables
        self.automaton = AnswerAutomaton(cw)
        self.grammar = lark_grammar(cw)
        self.matcher = new_matcher(tables.ll_split, self.grammar, what="word-list grammar")
        #: Split-matcher mask (whitespace-initial bits only) of pure separator states.
        self.rest_masks: dict[int, torch.Tensor] = {}
        #: Final mask of pure separator states.
        self.pure_masks: dict[int, torch.Tensor] = {}
        #: Whitespace-initial part per separator key.
        self.ws_parts: dict[frozenset[int], torch.Tensor] = {frozenset(): zeros(tables.width)}
        self.cw = cw
        # Every answer starts here: the one mask computed before the constraint is handed out.
        self.pure_mask(self.automaton.start, self.matcher)

    # -- masks
    def split_mask(self, m: Any) -> torch.Tensor:
        """The split matcher's mask, cut to the real vocabulary (carriers dropped)."""
        return matcher_mask(m, self.tables.split_width)[: self.tables.width]

    def ws_part(self, state: int, m: Any) -> torch.Tensor:
        """The whitespace-initial part of the mask of `state`, `m` being a matcher in it."""
        a, t = self.automaton, self.tables
        key = a.separator_key(state)
        part = self.ws_parts.get(key)
        if part is not None:
            return part
        part = zeros(t.width)
        for w, carriers, with_rest, only in t.ws_groups:
            nxt = a.run(w, state)
            if nxt == DEAD:
                continue
            part |= only
            rest = self.rest_masks.get(nxt)
            if rest is None:
                mm = m.deep_copy()
                if not mm.consume_tokens(list(carriers)):
                    raise RuntimeError(f"matcher rejected {w!r} the automaton allows")
                rest = self.rest_masks[nxt] = self.split_mask(mm) & t.ws_mask
            part |= rest & with_rest
        self.ws_parts[key] = part
        return part

    def pure_mask(self, state: int, m: Any) -> torch.Tensor:
        mask = self.pure_masks.get(state)
        if mask is None:
            mask = self.split_mask(m) & self.tables.nonws_valid_mask | self.ws_part(state, m)
            self.pure_masks[state] = mask
        return mask

    def exact_mask(self, m: Any) -> torch.Tensor:
        """The mask of matcher `m` with no automaton and no cache: every whitespace prefix is
        tried on a copy of the matcher. Slow (a dozen mask computations); the reference the
        cached path is tested against, and the fallback should the two ever disagree."""
        t = self.tables
        acc = self.split_mask(m) & t.nonws_valid_mask
        for _w, carriers, with_rest, only in t.ws_groups:
            mm = m.deep_copy()
            if not mm.consume_tokens(list(carriers)):
                continue
            acc |= only
            if bool(with_rest.any()):
                acc |= self.split_mask(mm) & with_rest
        return acc

    def split_ids(self, text: str) -> list[int]:
        """`text` tokenized by llguidance, in split-vocabulary ids."""
        t = self.tables
        return [s for i in t.ll.tokenize_str(text) for s in t.translate(i)]

    def warm(self, n_words: int, budget_s: float) -> None:
        """Compute now what the first generations would otherwise compute: the masks of every
        separator state reachable through punctuation, whitespace and one representative word
        (the caches), then the masks along a text made of the `n_words` most frequent words.

        The second part matters as much: llguidance builds its lexer's automaton lazily, and
        the first mask in a state near the start of a word (`t`, `des`) costs ~10 ms at 50,000
        words against ~0.3 ms once built. Correctness never depends on this; stops after
        `budget_s` seconds.
        """
        t0 = time.perf_counter()
        t = self.tables
        for state, text in separator_states(self.automaton, self.cw):
            m = self.matcher.deep_copy()
            if not m.consume_tokens(self.split_ids(text)):
                raise RuntimeError(f"matcher rejected {text!r} the automaton allows")
            self.pure_mask(state, m)
        seq = self.start()
        row = zeros(t.width)
        text = " ".join(self.cw.full_words[:n_words])
        for tok in t.tokenizer.encode(text, add_special_tokens=False):
            if time.perf_counter() - t0 > budget_s or WARM_STOP.is_set():
                break
            row.zero_()
            seq.fill_bitmask(row)
            if not seq.advance(tok):
                break

    # -- sequences
    def start(self) -> WordSequence:
        return WordSequence(self, self.matcher.deep_copy(), self.automaton.start, b"")

    def accepts(self, text: str) -> bool:
        """Character-level acceptance by llguidance (any tokenization of `text`)."""
        return accepts_tokens(self.matcher, self.split_ids(text))


class WordSequence(LlguidanceSequence):
    """A sequence under `LlguidanceWordlist`: the split matcher (the authority on every token),
    the automaton state (the cache key) and the undecoded tail of a partial UTF-8 character."""

    __slots__ = ("_exact", "_owner", "_pending", "_state")

    def __init__(
        self,
        owner: LlguidanceWordlist,
        matcher: Any,
        state: int,
        pending: bytes,
        exact: bool = False,
    ) -> None:
        super().__init__(matcher, owner.tables)
        self._owner = owner
        self._state = state
        self._pending = pending
        self._exact = exact

    def _consume(self, token_id: int) -> bool:
        t = self._tables
        if not self._matcher.consume_tokens(list(t.translate(token_id))):
            return False
        if self._exact:
            return True
        data = self._pending + t.token_bytes[token_id]
        try:
            text = data.decode("utf-8")
            self._pending = b""
        except UnicodeDecodeError as exc:
            if exc.end != len(data) or exc.reason != "unexpected end of data":
                return self._lose_sync("invalid UTF-8")
            text = data[: exc.start].decode("utf-8")
            self._pending = data[exc.start :]
        self._state = self._owner.automaton.run(text, self._state)
        if self._state == DEAD:
            return self._lose_sync(f"automaton rejected {text!r}")
        return True

    def _lose_sync(self, why: str) -> bool:
        """llguidance accepted what the automaton rejects: a bug, never seen in the tests. Keep
        decoding correctly with uncached exact masks rather than fail the request."""
        log.error("word-list automaton out of sync with llguidance (%s): exact masks", why)
        self._exact = True
        return True

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        o = self._owner
        if self._exact:
            copy_into(bitmask, o.exact_mask(self._matcher))
        elif self._pending:
            copy_into(bitmask, o.split_mask(self._matcher) & o.tables.nonws_valid_mask)
        elif o.automaton.pure_separator(self._state):
            copy_into(bitmask, o.pure_mask(self._state, self._matcher))
        else:
            row = o.split_mask(self._matcher) & o.tables.nonws_valid_mask
            row |= o.ws_part(self._state, self._matcher)
            copy_into(bitmask, row)
        return True

    def exact(self) -> torch.Tensor:
        """This state's mask computed by `exact_mask` (for tests)."""
        return self._owner.exact_mask(self._matcher)
