"""Constraint backends: compiled word-list constraints for one tokenizer, cached.

Two implementations of the same language (see `grammar`), chosen by `CONSTRAINT_BACKEND`:

- `llguidance` (default). The trie -> regex grammar, compiled by llguidance in a fraction of a
  second. A token mask is computed by walking the tokenizer's token trie through the grammar;
  after a complete word that walk visits every token starting with a space (32,000 of SmolLM2's
  49,152): about 1 ms per mask at 50,000 words on a small CPU. `_LlgWordlist` removes that cost
  exactly: the decoding matcher sees the vocabulary with the whitespace of whitespace-initial
  tokens split off (cheap masks inside words), and the whitespace-initial part of a mask, which
  depends only on the separator positions of the automaton state, is cached per constraint, as
  are whole masks of states outside any word.
- `lm-format-enforcer` (the reference). Its core classes (`TokenEnforcer`,
  `TokenEnforcerTokenizerData`, `CharacterLevelParser`; its transformers integration does not
  import on transformers 5.x) driving a trie-walking `CharacterLevelParser` over the same
  character automaton. Its own regex FSM would need about a minute to build at 10,000 words.

lm-format-enforcer works on decoded text, so it can never emit a token that is not complete
UTF-8 by itself. SmolLM2's tokenizer encodes ` ¿` as `[" \\xc2", "\\xbf"]`, and `¡` (alone or
after a space) only with such partial tokens: with that backend `¡` can never be written, and
` ¿` only through the non-canonical pair `" "` + `"¿"`. The same holds for several capital
letters with diacritics, which exist in no whole token or start none (`À Á È Í Ñ Ó Ú Ü Ä Ö Ç Ê
Î Ô Œ Ø Å Ì Ò`): `Él` is reachable, `Árbol`, `Über`, `Ça` or `Ñandú` are not. llguidance works on
bytes and has no such gap. Both accept the same *strings* (character-level acceptance); token by
token they differ exactly on tokenizations containing partial-UTF-8 tokens (pinned in tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch

from .base import CheckReport, CompiledConstraint, SequenceConstraint
from .cache import SingleFlightLRU
from .grammar import (
    CLOSING,
    DASHES,
    DEAD,
    GRAMMAR_VERSION,
    OPENING,
    AnswerAutomaton,
    CompiledWords,
    GrammarOptions,
    check,
    compile_words,
    finalize,
    lark_grammar,
    releasable,
)

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "LANGUAGE_NAMES",
    "PROMPT_HINT",
    "ConstraintCompiler",
    "LlguidanceBackend",
    "LlguidanceGrammar",
    "LlguidanceSequence",
    "LmfeBackend",
    "TokenizerTables",
    "WordlistConstraint",
    "prompt_hint",
]

BACKENDS = ("llguidance", "lm-format-enforcer")

#: The instruction given to the model with a word-list constraint. One place, so that the quality
#: experiments tune it here.
PROMPT_HINT = "Answer using only common {language} words; do not use digits, symbols or lists."

LANGUAGE_NAMES = MappingProxyType(
    {
        "es": "Spanish",
        "en": "English",
        "fr": "French",
        "de": "German",
        "it": "Italian",
        "pt": "Portuguese",
        "ca": "Catalan",
        "nl": "Dutch",
    }
)

#: ASCII whitespace: tokens starting with one of these bytes are "whitespace-initial".
_WS = b" \n\t\r\x0b\x0c"


def prompt_hint(lang: str) -> str:
    """The model instruction for a list of language `lang`."""
    return PROMPT_HINT.format(language=LANGUAGE_NAMES.get(lang, lang))


def _words32(n_bits: int) -> int:
    return (n_bits + 31) // 32


class _Registry(Protocol):
    def get(self, lang: str) -> Any: ...


# --------------------------------------------------------------------------------------------
# Per-tokenizer tables
# --------------------------------------------------------------------------------------------


class TokenizerTables:
    """Everything derived from one tokenizer, built once per application (lazily, thread-safe).

    - `ll`: llguidance's tokenizer (about 0.4 s to build from a HF tokenizer);
    - `token_bytes`: the bytes of every token, from llguidance: the ground truth both backends
      share. Special tokens are never text (masked out everywhere);
    - the *split* llguidance tokenizer used by word-list constraints: the same ids, except that a
      whitespace-initial token (`" hola"`, `"\\n"`) holds only the bytes after its whitespace
      (`"hola"`; none for pure whitespace, which is then disabled), plus one "carrier" token per
      whitespace byte after the vocabulary. Such a token is consumed as carriers + itself. The
      grammar walks no whitespace-initial token, which is what makes its masks cheap, and the
      mask of a state reached by whitespace tells which rests may follow it (see `_LlgWordlist`);
    - lm-format-enforcer's `TokenEnforcerTokenizerData` (built only when that backend is used).
    """

    def __init__(self, tokenizer: Any) -> None:
        import llguidance
        import llguidance.hf

        self.tokenizer = tokenizer
        eos = getattr(tokenizer, "eos_token_id", None)
        self.ll = llguidance.hf.from_tokenizer(tokenizer)
        self.vocab_size: int = self.ll.vocab_size
        self.eos_token_id: int | None = eos
        v = self.vocab_size
        self.special = frozenset(i for i in range(v) if self.ll.is_special_token(i))
        self.token_bytes: tuple[bytes, ...] = tuple(self.ll.decode_bytes([i]) for i in range(v))
        self.width = _words32(v)
        self.carrier_base = v
        prefix_of: dict[int, bytes] = {}
        split: list[bytes] = []
        for i, b in enumerate(self.token_bytes):
            j = 0
            while j < len(b) and b[j] in _WS:
                j += 1
            if j and i not in self.special:
                prefix_of[i] = b[:j]
                split.append(b[j:] if j < len(b) else b"\xff\xfe" + b)
            else:
                split.append(b)
        split.extend(bytes([c]) for c in _WS)
        self.split_width = _words32(len(split))
        is_ws = np.zeros(v, dtype=bool)
        is_ws[list(prefix_of)] = True
        self.is_ws_initial = is_ws
        valid = np.ones(v, dtype=bool)
        valid[list(self.special)] = False
        self.valid_mask = _pack(valid, self.width)
        self.ws_mask = _pack(is_ws, self.width)
        self.nonws_valid_mask = _pack(valid & ~is_ws, self.width)
        groups: dict[bytes, tuple[list[int], list[int]]] = {}
        for i, w in prefix_of.items():
            with_rest, only = groups.setdefault(w, ([], []))
            (with_rest if len(self.token_bytes[i]) > len(w) else only).append(i)
        #: (whitespace prefix, its carriers, tokens with more after it, tokens of only it)
        self.ws_groups: tuple[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor], ...] = tuple(
            (
                w.decode("ascii"),
                tuple(v + _WS.index(c) for c in w),
                _pack(_ids_to_bool(with_rest, v), self.width),
                _pack(_ids_to_bool(only, v), self.width),
            )
            for w, (with_rest, only) in sorted(groups.items())
        )
        self._translations = {
            i: tuple(v + _WS.index(c) for c in w)
            + ((i,) if len(self.token_bytes[i]) > len(w) else ())
            for i, w in prefix_of.items()
        }

        def encode(text: str) -> list[int]:
            ids = tokenizer.encode(text, add_special_tokens=False)
            return [s for i in ids for s in self.translate(i)]

        self.ll_split = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(_BytesTokenizer(encode, split, self.special, eos))
        )
        self._lmfe_lock = threading.Lock()
        self._lmfe: Any = None

    def translate(self, token: int) -> tuple[int, ...]:
        """The split-vocabulary tokens with the same bytes as `token`."""
        return self._translations.get(token) or (token,)

    def lmfe_data(self) -> Any:
        """lm-format-enforcer's tokenizer data: every non-special token that is whole UTF-8."""
        with self._lmfe_lock:
            if self._lmfe is None:
                from lmformatenforcer import TokenEnforcerTokenizerData

                regular = []
                for i, b in enumerate(self.token_bytes):
                    if i in self.special or not b:
                        continue
                    try:
                        text = b.decode("utf-8")
                    except UnicodeDecodeError:
                        continue  # a partial UTF-8 token: cannot be represented as text
                    regular.append((i, text, True))
                strs = {i: s for i, s, _ in regular}

                def decode(ids: list[int]) -> str:
                    return "".join(strs.get(i, "") for i in ids)

                self._lmfe = TokenEnforcerTokenizerData(
                    regular, decode, self.eos_token_id, False, self.vocab_size
                )
        return self._lmfe


def _ids_to_bool(ids: list[int], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[ids] = True
    return out


class _BytesTokenizer:
    """The shape `llguidance.TokenizerWrapper` expects, over an explicit list of token bytes."""

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        tokens: list[bytes],
        special: frozenset[int],
        eos: int | None,
    ) -> None:
        self._encode = encode
        self.tokens = tokens
        self.special_token_ids = sorted(special)
        self.eos_token_id = eos if eos is not None else 0
        self.bos_token_id = None

    def __call__(self, s: str | bytes) -> list[int]:
        if isinstance(s, bytes):
            s = s.decode("utf-8", errors="replace")
        return self._encode(s)


def _pack(bits: np.ndarray, width: int) -> torch.Tensor:
    """A bool vector as an int32 bitmask row (bit t % 32 of word t // 32)."""
    padded = np.zeros(width * 32, dtype=bool)
    padded[: len(bits)] = bits
    return torch.from_numpy(np.packbits(padded, bitorder="little").view(np.int32).copy())


def _unpack(row: torch.Tensor, n: int) -> torch.Tensor:
    """An int32 bitmask row as a bool vector of length `n`."""
    flat = np.unpackbits(row.contiguous().numpy().view(np.uint8), bitorder="little")
    return torch.from_numpy(flat[:n].astype(bool))


def _copy_into(row: torch.Tensor, mask: torch.Tensor) -> None:
    k = min(row.shape[0], mask.shape[0])
    row[:k] = mask[:k]


# --------------------------------------------------------------------------------------------
# llguidance: generic grammars
# --------------------------------------------------------------------------------------------


class LlguidanceSequence(SequenceConstraint):
    """Decoding state over any llguidance grammar: one `LLMatcher`, deep-copied per fork."""

    __slots__ = ("_m", "_tables")

    def __init__(self, matcher: Any, tables: TokenizerTables) -> None:
        self._m = matcher
        self._tables = tables

    def fork(self) -> LlguidanceSequence:
        return LlguidanceSequence(self._m.deep_copy(), self._tables)

    def advance(self, token_id: int) -> bool:
        if token_id >= self._tables.vocab_size or token_id in self._tables.special:
            return False
        return bool(self._m.consume_token(token_id))

    def fill_bitmask(self, bitmask: torch.Tensor) -> bool:
        import llguidance.torch as lt

        t = self._tables
        buf = torch.zeros((1, t.width), dtype=torch.int32)
        lt.fill_next_token_bitmask(self._m, buf)
        _copy_into(bitmask, buf[0] & t.valid_mask)
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        row = torch.zeros(self._tables.width, dtype=torch.int32)
        self.fill_bitmask(row)
        n = min(allowed.shape[0], self._tables.vocab_size)
        allowed[:n] |= _unpack(row, n)

    def can_end(self) -> bool:
        return bool(self._m.is_accepting())

    @property
    def error(self) -> str:
        return str(self._m.get_error())


class LlguidanceGrammar:
    """A compiled llguidance grammar: `start()` gives a fresh sequence (a copy of a clean matcher,
    microseconds, where building a matcher recompiles the grammar)."""

    def __init__(self, matcher: Any, tables: TokenizerTables, compile_seconds: float) -> None:
        self._clean = matcher
        self.tables = tables
        self.compile_seconds = compile_seconds

    def start(self) -> LlguidanceSequence:
        return LlguidanceSequence(self._clean.deep_copy(), self.tables)

    def accepts(self, text: str) -> bool:
        """Character-level acceptance: is `text` a complete string of the grammar?"""
        m = self._clean.deep_copy()
        ids = self.tables.ll.tokenize_str(text)
        return bool(m.consume_tokens(ids)) and bool(m.is_accepting())


class LlguidanceBackend:
    """llguidance over one tokenizer's tables."""

    name = "llguidance"

    def __init__(self, tables: TokenizerTables) -> None:
        self.tables = tables

    def compile_lark(self, grammar: str) -> LlguidanceGrammar:
        """Compile any Lark grammar (e.g. a phonological one) into a factory of sequences."""
        import llguidance

        t0 = time.perf_counter()
        m = llguidance.LLMatcher(
            self.tables.ll, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0
        )
        if m.is_error():
            raise ValueError(f"grammar did not compile: {m.get_error()}")
        return LlguidanceGrammar(m, self.tables, time.perf_counter() - t0)

    def compile_words(self, cw: CompiledWords) -> _LlgWordlist:
        return _LlgWordlist(cw, self.tables)


# --------------------------------------------------------------------------------------------
# llguidance: word lists (fast masks)
# --------------------------------------------------------------------------------------------


class _LlgWordlist:
    """One word-list constraint for llguidance, with exact mask decompositions.

    The decoding matcher runs over the split vocabulary (`TokenizerTables`), so its mask covers
    exactly the tokens that do not start with whitespace, and computing it inside a word walks
    only tokens that continue the word. For the whitespace-initial tokens: entries contain no
    whitespace, so a whitespace byte is only ever allowed from a separator position, and the
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
    """

    def __init__(self, cw: CompiledWords, tables: TokenizerTables) -> None:
        import llguidance

        self.tables = tables
        self.automaton = AnswerAutomaton(cw)
        self.grammar = lark_grammar(cw)
        m = llguidance.LLMatcher(
            tables.ll_split, llguidance.LLMatcher.grammar_from_lark(self.grammar), log_level=0
        )
        if m.is_error():
            raise ValueError(f"word-list grammar did not compile: {m.get_error()}")
        self.matcher = m
        #: Split-matcher mask (whitespace-initial bits only) of pure separator states.
        self.rest_masks: dict[int, torch.Tensor] = {}
        #: Final mask of pure separator states.
        self.pure_masks: dict[int, torch.Tensor] = {}
        #: Whitespace-initial part per separator key.
        self.ws_parts: dict[frozenset[int], torch.Tensor] = {frozenset(): _zeros(tables.width)}
        self._cw = cw
        # Every answer starts here: the one mask computed before the constraint is handed out.
        self.pure_mask(self.automaton.start, self.matcher)

    # -- masks
    def split_mask(self, m: Any) -> torch.Tensor:
        """The split matcher's mask, cut to the real vocabulary (carriers dropped)."""
        import llguidance.torch as lt

        buf = torch.zeros((1, self.tables.split_width), dtype=torch.int32)
        lt.fill_next_token_bitmask(m, buf)
        return buf[0, : self.tables.width]

    def ws_part(self, state: int, m: Any) -> torch.Tensor:
        """The whitespace-initial part of the mask of `state`, `m` being a matcher in it."""
        a, t = self.automaton, self.tables
        key = a.separator_key(state)
        part = self.ws_parts.get(key)
        if part is not None:
            return part
        part = _zeros(t.width)
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
        for state, text in _separator_states(self.automaton, self._cw):
            m = self.matcher.deep_copy()
            if not m.consume_tokens([s for i in t.ll.tokenize_str(text) for s in t.translate(i)]):
                raise RuntimeError(f"matcher rejected {text!r} the automaton allows")
            self.pure_mask(state, m)
        seq = self.start()
        row = _zeros(t.width)
        text = " ".join(self._cw.full_words[:n_words])
        for tok in t.tokenizer.encode(text, add_special_tokens=False):
            if time.perf_counter() - t0 > budget_s:
                break
            row.zero_()
            seq.fill_bitmask(row)
            if not seq.advance(tok):
                break

    # -- sequences
    def start(self) -> _LlgWordSequence:
        return _LlgWordSequence(self, self.matcher.deep_copy(), self.automaton.start, b"")

    def accepts(self, text: str) -> bool:
        """Character-level acceptance by llguidance (any tokenization of `text`)."""
        t = self.tables
        m = self.matcher.deep_copy()
        ids = [s for i in t.ll.tokenize_str(text) for s in t.translate(i)]
        return bool(m.consume_tokens(ids)) and bool(m.is_accepting())


def _separator_states(a: AnswerAutomaton, cw: CompiledWords) -> list[tuple[int, str]]:
    """Every pure separator state reachable through punctuation, whitespace and one
    representative word and clitic, with a shortest text leading to it (breadth first)."""
    reps = [w for w in (_leaf_entry(a, cw.full_words[:2000]), _leaf_entry(a, cw.clitic_words)) if w]
    pieces = sorted(set(OPENING + CLOSING + DASHES + " \n")) + reps
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


def _leaf_entry(a: AnswerAutomaton, words: Sequence[str]) -> str | None:
    """An entry after which the automaton is in a pure separator state (it cannot continue)."""
    for w in words:
        s = a.run(w)
        if s != DEAD and a.pure_separator(s):
            return w
    return None


def _zeros(width: int) -> torch.Tensor:
    return torch.zeros(width, dtype=torch.int32)


class _LlgWordSequence(SequenceConstraint):
    """A sequence under `_LlgWordlist`: the split matcher (the authority on every token), the
    automaton state (the cache key) and the undecoded tail of a partial UTF-8 character."""

    __slots__ = ("_exact", "_m", "_owner", "_pending", "_state")

    def __init__(
        self, owner: _LlgWordlist, matcher: Any, state: int, pending: bytes, exact: bool = False
    ) -> None:
        self._owner = owner
        self._m = matcher
        self._state = state
        self._pending = pending
        self._exact = exact

    def fork(self) -> _LlgWordSequence:
        return _LlgWordSequence(
            self._owner, self._m.deep_copy(), self._state, self._pending, self._exact
        )

    def advance(self, token_id: int) -> bool:
        t = self._owner.tables
        if token_id >= t.vocab_size or token_id in t.special:
            return False
        if not self._m.consume_tokens(list(t.translate(token_id))):
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
            _copy_into(bitmask, o.exact_mask(self._m))
        elif self._pending:
            _copy_into(bitmask, o.split_mask(self._m) & o.tables.nonws_valid_mask)
        elif o.automaton.pure_separator(self._state):
            _copy_into(bitmask, o.pure_mask(self._state, self._m))
        else:
            row = o.split_mask(self._m) & o.tables.nonws_valid_mask
            row |= o.ws_part(self._state, self._m)
            _copy_into(bitmask, row)
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        t = self._owner.tables
        row = torch.zeros(t.width, dtype=torch.int32)
        self.fill_bitmask(row)
        n = min(allowed.shape[0], t.vocab_size)
        allowed[:n] |= _unpack(row, n)

    def can_end(self) -> bool:
        return bool(self._m.is_accepting())

    def exact(self) -> torch.Tensor:
        """This state's mask computed by `exact_mask` (for tests)."""
        return self._owner.exact_mask(self._m)


# --------------------------------------------------------------------------------------------
# lm-format-enforcer
# --------------------------------------------------------------------------------------------


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


class _LmfeWordlist:
    """One word-list constraint for lm-format-enforcer."""

    def __init__(self, cw: CompiledWords, tables: TokenizerTables) -> None:
        self.tables = tables
        self.automaton = AnswerAutomaton(cw)
        self._cw = cw
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
        for state, _ in _separator_states(self.automaton, self._cw):
            if time.perf_counter() - t0 > budget_s:
                return
            self._enforcer_cls(
                self._data, self._parser_cls(self.automaton, state), self.shared
            ).get_allowed_tokens([])
        seq = self.start()
        text = " ".join(self._cw.full_words[:n_words])
        for tok in self.tables.tokenizer.encode(text, add_special_tokens=False):
            if time.perf_counter() - t0 > budget_s or not seq.advance(tok):
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


class LmfeBackend:
    """lm-format-enforcer over one tokenizer's tables."""

    name = "lm-format-enforcer"

    def __init__(self, tables: TokenizerTables) -> None:
        self.tables = tables

    def compile_words(self, cw: CompiledWords) -> _LmfeWordlist:
        return _LmfeWordlist(cw, self.tables)


# --------------------------------------------------------------------------------------------
# The compiled constraint and the compiler
# --------------------------------------------------------------------------------------------


class WordlistConstraint(CompiledConstraint):
    """`vocab_lang` + `vocab_n_words`, compiled for one tokenizer and backend (shared, cached)."""

    def __init__(
        self,
        *,
        lang: str,
        words: tuple[str, ...],
        sha256: str,
        backend: str,
        options: GrammarOptions,
        engine: Any,
        compile_seconds: float,
    ) -> None:
        self.lang = lang
        self.n_words = len(words)
        self.sha256 = sha256
        self.backend = backend
        self.options = options
        self.engine = engine
        self.words = frozenset(words)
        self.compile_seconds = compile_seconds
        self.warm_seconds: float | None = None
        self._warm_lock = threading.Lock()

    def warm(self, n_words: int = 2000, budget_s: float = 10.0) -> float:
        """Prepare the masks that first generations need (see `_LlgWordlist.warm`), once; a
        second caller waits for the first. Returns the seconds it took."""
        with self._warm_lock:
            if self.warm_seconds is None:
                t0 = time.perf_counter()
                try:
                    self.engine.warm(n_words, budget_s)
                finally:
                    self.warm_seconds = time.perf_counter() - t0
            return self.warm_seconds

    def start(self) -> SequenceConstraint:
        return self.engine.start()

    def releasable(self, text: str) -> int:
        return releasable(text)

    def finalize(self, text: str, complete: bool) -> str:
        return finalize(text, complete, self.words, self.options.allow_capitalized)

    def check(self, text: str) -> CheckReport:
        violations = check(text, self.words, self.options.allow_capitalized)
        return CheckReport(
            ok=not violations,
            violations=violations,
            details={"vocab_lang": self.lang, "vocab_n_words": self.n_words},
        )

    def prompt_hint(self) -> str:
        return prompt_hint(self.lang)

    def describe(self) -> dict[str, Any]:
        return {
            "vocab_lang": self.lang,
            "vocab_n_words": self.n_words,
            "backend": self.backend,
            "sha256": self.sha256,
            "compile_seconds": round(self.compile_seconds, 4),
        }

    def accepts(self, text: str) -> bool:
        """Character-level acceptance by this backend (used to test that backends agree)."""
        return bool(self.engine.accepts(text))


class ConstraintCompiler:
    """Compiles and caches word-list constraints for one tokenizer (one per application).

    Cache key: (backend, hash of the top-n list contents, n, grammar options, grammar version);
    the tokenizer is the compiler's own. Bounded LRU. `get` is blocking and thread-safe, and
    single-flight: concurrent requests for a key being compiled wait for that one compilation.
    Callers on an event loop run it in a thread (`asyncio.to_thread`).
    """

    def __init__(
        self,
        tokenizer: Any,
        registry: _Registry,
        backend: str = "llguidance",
        cache_size: int = 32,
        options: GrammarOptions = GrammarOptions(),
        *,
        tables: TokenizerTables | None = None,
        warm_words: int = 2000,
        warm_budget_s: float = 10.0,
        background_warm: bool = True,
    ) -> None:
        """`tables` lets several compilers of one tokenizer share its tables (tests, benches).

        After a compilation, a background thread warms the new constraint (its separator masks
        and the masks along its `warm_words` most frequent words, at most `warm_budget_s`
        seconds) so that the first requests do not pay for llguidance's lazily built lexer;
        `prebuild` does it synchronously. `background_warm=False` leaves it to the caller.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown constraint backend {backend!r}; expected one of {BACKENDS}")
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.tokenizer = tokenizer
        self.registry = registry
        self._backend_name = backend
        self.cache_size = cache_size
        self.options = options
        self.warm_words = warm_words
        self.warm_budget_s = warm_budget_s
        self.background_warm = background_warm
        self._cache: SingleFlightLRU[tuple, WordlistConstraint] = SingleFlightLRU(cache_size)
        self._tables: TokenizerTables | None = tables
        self._tables_lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        return self._backend_name

    @property
    def tables(self) -> TokenizerTables:
        """The per-tokenizer tables, built on first use."""
        with self._tables_lock:
            if self._tables is None:
                self._tables = TokenizerTables(self.tokenizer)
            return self._tables

    def backend(self) -> LlguidanceBackend | LmfeBackend:
        if self._backend_name == "llguidance":
            return LlguidanceBackend(self.tables)
        return LmfeBackend(self.tables)

    def llguidance(self) -> LlguidanceBackend:
        """The llguidance backend whatever the setting (for grammars only it can compile)."""
        return LlguidanceBackend(self.tables)

    def get(self, lang: str, n_words: int) -> tuple[WordlistConstraint, bool]:
        """(constraint, cache_hit) for the `n_words` most frequent words of `lang`.

        Raises the registry's word-list errors, and ValueError for `n_words < 1`.
        """
        if n_words < 1:
            raise ValueError(f"vocab_n_words must be >= 1, got {n_words}")
        wl = self.registry.get(lang)
        words = tuple(wl.top(n_words))
        sha = wl.sha256_top(n_words)
        key = (self._backend_name, sha, len(words), self.options, GRAMMAR_VERSION)
        constraint, hit = self._cache.get_or_compute(key, lambda: self._compile(lang, words, sha))
        if hit:
            return constraint, True
        if self.background_warm and self.warm_words > 0:
            threading.Thread(
                target=self._warm, args=(constraint,), name="constraint-warm", daemon=True
            ).start()
        return constraint, False

    def _warm(self, constraint: WordlistConstraint) -> None:
        try:
            seconds = constraint.warm(self.warm_words, self.warm_budget_s)
            log.info("warmed %s/%d in %.2f s", constraint.lang, constraint.n_words, seconds)
        except Exception:  # a warm-up failure must not take anything down; requests still work
            log.exception("warming %s/%d failed", constraint.lang, constraint.n_words)

    def _compile(self, lang: str, words: tuple[str, ...], sha: str) -> WordlistConstraint:
        backend = self.backend()
        t0 = time.perf_counter()
        cw = compile_words(words, self.options)
        engine = backend.compile_words(cw)
        seconds = time.perf_counter() - t0
        log.info("compiled %s/%d with %s in %.3f s", lang, len(words), backend.name, seconds)
        return WordlistConstraint(
            lang=lang,
            words=words,
            sha256=sha,
            backend=backend.name,
            options=self.options,
            engine=engine,
            compile_seconds=seconds,
        )

    def warmup(self) -> None:
        """Build the per-tokenizer tables and exercise one tiny constraint end to end, so that
        no user request pays for first-use work."""
        tables = self.tables
        if self._backend_name == "lm-format-enforcer":
            tables.lmfe_data()
        cw = compile_words(("hola", "mundo", "l'"), self.options)
        engine = self.backend().compile_words(cw)
        seq = engine.start()
        row = torch.zeros(tables.width, dtype=torch.int32)
        for tok in self.tokenizer.encode("Hola mundo", add_special_tokens=False):
            if not seq.fill_bitmask(row):
                seq.fill_allowed(torch.zeros(tables.vocab_size, dtype=torch.bool))
            if not seq.advance(tok):
                break
        from .processor import apply_bitmask

        scores = torch.zeros((1, tables.vocab_size))
        apply_bitmask(scores, row.unsqueeze(0))

    def prebuild(self, langs: Sequence[str], counts: Sequence[int]) -> None:
        """Compile and warm every (language, count) pair now (start-up), smallest first."""
        for lang in langs:
            for n in sorted(counts):
                constraint, _ = self.get(lang, n)
                constraint.warm(self.warm_words, self.warm_budget_s)
                log.info(
                    "prebuilt %s/%d (compile %.3f s, warm %.2f s)",
                    lang,
                    n,
                    constraint.compile_seconds,
                    constraint.warm_seconds or 0.0,
                )

    def cached(self) -> list[dict[str, Any]]:
        """What the cache holds, most recently used last (for diagnostics)."""
        return [c.describe() for c in self._cache.values()]
