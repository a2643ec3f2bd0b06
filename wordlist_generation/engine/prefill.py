"""Reading prompts into the KV cache: the prefix cache, and several prompts read in one pass.

`PrefixCache` keeps the keys and values of recent prompts, so that a new prompt reads only what it
does not share with one of them. `PromptBatch` puts the unread ends of several prompts side by side
for one forward pass: on a small CPU, each forward pass reads every weight once, so sixteen
prompts that arrive together and each have a few tokens left to read cost about one decoding step
instead of sixteen (the time to the first token of the last of them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache

from .kvcache import NewCache, filled_cache


@dataclass
class PromptRead:
    """One prompt of a `PromptBatch`: its tokens and the cache holding its first `cached`."""

    tokens: Sequence[int]
    cache: DynamicCache
    cached: int


class PromptBatch:
    """The unread ends of several prompts as one left-padded forward pass.

    Every row reads its last `width` tokens (the longest unread end among them), so a row whose
    unread end is shorter reads again a few tokens its cache already holds, and a prompt shorter
    than `width` is left-padded: no row has padding between its cached and its new columns, and
    the combined cache is left-padded only, as the running batch is. After the pass, row i's
    real columns are the last `len(tokens)` columns of the combined cache.
    """

    def __init__(
        self, reads: Sequence[PromptRead], new_cache: NewCache, device: torch.device
    ) -> None:
        self.reads = list(reads)
        self.width = max(len(r.tokens) - r.cached for r in self.reads)
        keep = [max(0, len(r.tokens) - self.width) for r in self.reads]  # cached columns kept
        ids, positions = [], []
        for r, kept in zip(self.reads, keep, strict=True):
            pad = self.width - (len(r.tokens) - kept)
            ids.append([0] * pad + list(r.tokens[kept:]))
            positions.append([0] * pad + list(range(kept, len(r.tokens))))
        self.input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        self.position_ids = torch.tensor(positions, dtype=torch.long, device=device)
        #: [rows, columns] of 0/1: the rows' mask in the combined cache after the pass (each row's
        #: prompt is its last columns, all its padding on the left).
        self.mask = left_padded_mask([len(r.tokens) for r in self.reads], device)
        self.cache = stack_caches(
            [(r.cache, kept) for r, kept in zip(self.reads, keep, strict=True)], new_cache
        )

    def run(self, model: Any, **options: Any) -> torch.Tensor:
        """The forward pass: each row's logits at its last prompt token, [rows, vocabulary].
        `options` go to the model as they are (`dense_prefill`)."""
        out = model(
            input_ids=self.input_ids,
            attention_mask=self.mask,
            position_ids=self.position_ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **options,
        )
        return out.logits[:, -1].float()

    def row_columns(self, row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Row `row`'s keys and values after the pass, its real columns only (views)."""
        n = len(self.reads[row].tokens)
        return [
            (layer.keys[row : row + 1, :, -n:], layer.values[row : row + 1, :, -n:])
            for layer in self.cache.layers
        ]


def stack_caches(rows: Sequence[tuple[DynamicCache, int]], new: NewCache) -> DynamicCache:
    """One cache of the rows' first `kept` columns each, [(cache, kept), ...] of single-row caches,
    left-padded to the longest (padding is zeros: whoever reads it masks it out)."""
    width = max(kept for _, kept in rows)
    if width == 0:
        return new()
    donor = next(cache for cache, kept in rows if kept > 0)
    layers = []
    for index, layer in enumerate(donor.layers):
        parts = []
        for name, like in (("keys", layer.keys), ("values", layer.values)):
            out = like.new_zeros((len(rows), like.shape[1], width, like.shape[3]))
            for row, (cache, kept) in enumerate(rows):
                if kept > 0:
                    source = getattr(cache.layers[index], name)
                    out[row, :, width - kept :].copy_(source[0, :, :kept])
            parts.append(out)
        layers.append((parts[0], parts[1]))
    return filled_cache(layers, new)


def left_padded_mask(lengths: Sequence[int], device: torch.device) -> torch.Tensor:
    """The [rows, max(lengths)] 0/1 mask of rows holding `lengths` columns, left-padded."""
    width = max(lengths)
    return torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=device)


class _Cached(NamedTuple):
    """A prompt's keys and values per layer, and the logits its last token gave."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor


class PrefixCache:
    """Keys and values of recently read prompts, reused for the longest shared prefix.

    Chat prompts share long prefixes (the template's system prompt, the vocabulary hint), so a new
    prompt starts from the cached columns of the longest prefix it shares with a recent one and
    reads only the rest. Keys and values at a position depend only on the tokens up to it, so
    the reuse is exact up to rounding: reading the last token in a decoding step instead of in
    the prompt's pass changes the last bits of its logits, which the bfloat16 activations of
    quantized weights carry on (~0.1 nats on the embedded model's int4 weights), enough to part
    a seeded draw. So a prompt read whole also keeps those logits, and the same prompt again
    starts from them without a pass: a repeated request decodes as it did the first time. A
    small LRU: `size` prompts, each kept whole.
    """

    def __init__(self, size: int = 16, min_tokens: int = 16) -> None:
        self.size = size
        self.min_tokens = min_tokens
        self._items: OrderedDict[tuple[int, ...], _Cached] = OrderedDict()
        self.hits = 0
        self.reused_tokens = 0

    def store(self, tokens: Sequence[int], cache: DynamicCache, logits: torch.Tensor) -> None:
        """Keep a prompt read alone (its cache holds that prompt only)."""
        self.store_columns(tokens, [(layer.keys, layer.values) for layer in cache.layers], logits)

    def store_columns(
        self,
        tokens: Sequence[int],
        layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
        logits: torch.Tensor,
    ) -> None:
        """Keep a prompt's keys and values, [1, heads, len(tokens), head_dim] per layer, and the
        logits its last token gave [vocabulary]."""
        if self.size <= 0 or len(tokens) < self.min_tokens:
            return
        key = tuple(tokens)
        self._items[key] = _Cached(
            [(k.clone(), v.clone()) for k, v in layers], logits.detach().clone()
        )
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def lookup(
        self, tokens: Sequence[int], new: NewCache
    ) -> tuple[int, DynamicCache, torch.Tensor | None]:
        """(columns reused, a cache holding them, logits): the whole prompt with its last token's
        logits where it was kept before; else at most len(tokens) - 1 columns and None, so that
        the last prompt token is read (its logits give the first generated token)."""
        key = tuple(tokens)
        whole = self._items.get(key)
        if whole is not None:
            self._items.move_to_end(key)
            self.hits += 1
            self.reused_tokens += len(key)
            return len(key), filled_cache(whole.layers, new), whole.logits
        best, best_key = 0, None
        wanted = key[: len(key) - 1]
        for cached in self._items:
            n = _shared_prefix(cached, wanted)
            if n > best:
                best, best_key = n, cached
        if best_key is None or best < self.min_tokens:
            return 0, new(), None
        self._items.move_to_end(best_key)
        cache = filled_cache(
            [(k[:, :, :best], v[:, :, :best]) for k, v in self._items[best_key].layers], new
        )
        self.hits += 1
        self.reused_tokens += best
        return best, cache, None


def _shared_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The length of the longest common prefix of two token tuples (a binary search over
    slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
