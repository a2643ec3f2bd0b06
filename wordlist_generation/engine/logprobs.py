"""Per-token log-probabilities of generated text (`SamplingParams.logprobs`).

Every engine path records the same thing for a chosen token (`TokenLogprob`):

- `logprob`: under the distribution decoded from, i.e. the log-softmax of the processed scores:
  the model's logits after penalties, the constraint mask and its token bias, divided by the
  temperature when the row samples. Top-k/top-p truncation is *not* applied: it only narrows
  which tokens may be drawn, and would turn every other alternative into minus infinity;
- `raw_logprob`: under the model alone (log-softmax of the logits: temperature 1, no penalties,
  no mask), what `POST /v1/score` reports for the same token after the same context;
- `top`: the k most likely tokens of the decoded distribution, best first; tokens the mask rules
  out (minus infinity) are left out, so fewer than k appear when fewer are allowed.

Beam search records the winning beams' tokens from transformers' per-step outputs (the processed
log-probabilities, renormalised, and the raw logits), gathered along each beam's own history.

`TokenPieces` gives a token's text and bytes as OpenAI's `logprobs` objects show them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from .params import SamplingParams, TokenLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def decoded_logprobs(scores: torch.Tensor, params: SamplingParams, sampled: bool) -> torch.Tensor:
    """Log-probabilities of one row's processed scores, with the temperature when it samples."""
    logits = scores.float()
    if sampled and params.temperature != 1.0:
        logits = logits / params.temperature
    return torch.log_softmax(logits, dim=-1)


def token_entry(logp: torch.Tensor, token: int, raw: float, k: int) -> TokenLogprob:
    """The entry of `token` chosen from the distribution `logp`, with its `k` best alternatives."""
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        values, ids = torch.topk(logp, min(k, logp.shape[-1]))
        top = tuple(
            (i, v)
            for i, v in zip(ids.tolist(), values.tolist(), strict=True)
            if v != -math.inf
        )
    return TokenLogprob(id=token, logprob=float(logp[token]), raw_logprob=raw, top=top)


def beam_entries(
    out: Any, row: int, tokens: Sequence[int], k: int
) -> list[TokenLogprob]:
    """The entries of returned sequence `row` of a beam search run with `output_scores` and
    `output_logits` (`out`: transformers' `GenerateBeamDecoderOnlyOutput`), one per token of
    `tokens` (its generated tokens), read at each step from the beam that chose it."""
    entries: list[TokenLogprob] = []
    steps = out.beam_indices.shape[1]
    for t, token in enumerate(tokens[:steps]):
        beam = int(out.beam_indices[row, t])
        if beam < 0:
            break
        logp = torch.log_softmax(out.scores[t][beam].float(), dim=-1)
        raw = torch.log_softmax(out.logits[t][beam].float(), dim=-1)[token]
        entries.append(token_entry(logp, token, float(raw), k))
    return entries


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the character standing for each byte -> the byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_DECODER = _byte_decoder()


class TokenPieces:
    """A token's text and bytes for OpenAI's `logprobs` objects, for one tokenizer.

    The bytes are the token's own (byte-level BPE: its characters mapped back to bytes;
    SentencePiece: `▁` is a space and `<0xNN>` one byte), so the bytes of an answer's tokens
    joined are its UTF-8 text. The text is those bytes decoded; a token that is not whole UTF-8 on
    its own (part of an emoji) shows its bytes escaped, `\\xf0\\x9f`. A special token (never part
    of the text) shows its name.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        probe = tokenizer.convert_ids_to_tokens(tokenizer.encode(" \n", add_special_tokens=False))
        self.byte_level = "".join(probe) == "ĠĊ"
        self.special = frozenset(int(i) for i in tokenizer.all_special_ids)
        self._cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token_id: int) -> tuple[str, bytes]:
        hit = self._cache.get(token_id)
        if hit is None:
            hit = self._cache[token_id] = self._piece(token_id)
        return hit

    def _piece(self, token_id: int) -> tuple[str, bytes]:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return "", b""
        if token_id in self.special:
            data = piece.encode()
        elif self.byte_level and all(c in _BYTE_DECODER for c in piece):
            data = bytes(_BYTE_DECODER[c] for c in piece)
        elif match := _BYTE_TOKEN.fullmatch(piece):
            data = bytes([int(match.group(1), 16)])
        elif self.byte_level:
            data = piece.encode()
        else:
            data = piece.replace("▁", " ").encode()
        return data.decode("utf-8", errors="backslashreplace"), data
