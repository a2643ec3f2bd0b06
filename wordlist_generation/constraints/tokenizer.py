"""Per-tokenizer tables, built once per application and shared by every constraint kind.

Word-list constraints use all of it; phonological constraints use `ll` (llguidance's tokenizer).
Building them costs about a second for SmolLM2, which is why no request ever does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .bitmask import ids_to_bool, pack, words32

__all__ = ["WHITESPACE", "TokenizerTables"]

#: ASCII whitespace: tokens starting with one of these bytes are "whitespace-initial".
WHITESPACE = b" \n\t\r\x0b\x0c"


class TokenizerTables:
    """Everything derived from one tokenizer (thread-safe; lm-format-enforcer's part is lazy).

    - `ll`: llguidance's tokenizer (about 0.4 s to build from a HF tokenizer);
    - `token_bytes`: the bytes of every token, from llguidance: the ground truth both word-list
      backends share. Special tokens are never text (masked out everywhere);
    - the *split* llguidance tokenizer `ll_split` used by word-list constraints: the same ids,
      except that a whitespace-initial token (`" hola"`, `"\\n"`) holds only the bytes after its
      whitespace (`"hola"`; none for pure whitespace, which is then disabled), plus one "carrier"
      token per whitespace byte after the vocabulary. Such a token is consumed as carriers +
      itself (`translate`). A grammar walks no whitespace-initial token, which is what makes its
      masks cheap, and the mask of a state reached by whitespace tells which rests may follow it
      (see `wordlist.llguidance`);
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
        self.width = words32(v)
        self.carrier_base = v
        prefix_of: dict[int, bytes] = {}
        split: list[bytes] = []
        for i, b in enumerate(self.token_bytes):
            j = 0
            while j < len(b) and b[j] in WHITESPACE:
                j += 1
            if j and i not in self.special:
                prefix_of[i] = b[:j]
                split.append(b[j:] if j < len(b) else b"\xff\xfe" + b)
            else:
                split.append(b)
        split.extend(bytes([c]) for c in WHITESPACE)
        self.split_width = words32(len(split))
        is_ws = np.zeros(v, dtype=bool)
        is_ws[list(prefix_of)] = True
        self.is_ws_initial = is_ws
        valid = np.ones(v, dtype=bool)
        valid[list(self.special)] = False
        self.valid_mask = pack(valid, self.width)
        self.ws_mask = pack(is_ws, self.width)
        self.nonws_valid_mask = pack(valid & ~is_ws, self.width)
        groups: dict[bytes, tuple[list[int], list[int]]] = {}
        for i, w in prefix_of.items():
            with_rest, only = groups.setdefault(w, ([], []))
            (with_rest if len(self.token_bytes[i]) > len(w) else only).append(i)
        #: (whitespace prefix, its carriers, tokens with more after it, tokens of only it)
        self.ws_groups: tuple[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor], ...] = tuple(
            (
                w.decode("ascii"),
                tuple(v + WHITESPACE.index(c) for c in w),
                pack(ids_to_bool(with_rest, v), self.width),
                pack(ids_to_bool(only, v), self.width),
            )
            for w, (with_rest, only) in sorted(groups.items())
        )
        self._translations = {
            i: tuple(v + WHITESPACE.index(c) for c in w)
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

    def is_text_token(self, token_id: int) -> bool:
        """A token of the vocabulary that is not special (the only ones a constraint accepts)."""
        return token_id < self.vocab_size and token_id not in self.special

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
