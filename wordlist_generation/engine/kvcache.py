"""KV caches for the scheduler: layers that grow in place, and caches made from given tensors.

transformers' `DynamicLayer` appends a decoding step's keys and values with `torch.cat`, which
copies the whole cache of the layer every step: 46 KB a token and row for the embedded model, so
~75 MB a step at 16 rows of 100 tokens, a sixth of a 16-row step on a 2-core CPU. `GrowingLayer`
keeps them in buffers with room to spare and writes a step's columns in place; it copies only when
the room runs out (then it leaves a quarter as much again spare, at least `SPARE_COLUMNS`: about
four columns copied a step on average, and at most a quarter more memory) or when it is handed a
tensor (which it takes as it is, never writing into it: a cache may start from views of
another's).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

NewCache = Callable[[], DynamicCache]
#: Columns a growing buffer leaves spare at least.
SPARE_COLUMNS = 32


class _Buffer:
    """[rows, heads, capacity, dim] with its first `used` columns in use. A tensor handed in is
    full (`used` is its every column), so appending to it always grows into a new buffer: only
    buffers this layer allocated are ever written past `used`."""

    __slots__ = ("tensor", "used")

    def __init__(self, tensor: torch.Tensor | None) -> None:
        self.tensor = tensor
        self.used = tensor.shape[-2] if tensor is not None and tensor.dim() == 4 else None

    def view(self) -> torch.Tensor | None:
        t = self.tensor
        if t is None or self.used is None or self.used == t.shape[-2]:
            return t
        return t.narrow(2, 0, self.used)

    def append(self, new: torch.Tensor) -> torch.Tensor:
        """Write `new`'s columns after those in use; returns the columns now in use."""
        used = self.used or 0
        total = used + new.shape[-2]
        t = self.tensor
        if t is None or self.used is None or total > t.shape[-2]:
            spare = max(SPARE_COLUMNS, total // 4)
            grown = new.new_empty((*new.shape[:2], total + spare, new.shape[-1]))
            if used:
                assert t is not None
                grown.narrow(2, 0, used).copy_(t.narrow(2, 0, used))
            self.tensor = t = grown
        t.narrow(2, used, total - used).copy_(new)
        self.used = total
        return t.narrow(2, 0, total)


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `update` writes into buffers with spare columns. `keys` and `values`
    read as the columns in use; assigning them (as transformers' batch selection and the
    scheduler's padding and trimming do) takes the tensor as it is."""

    def __init__(self, **kwargs: Any) -> None:
        self._keys = _Buffer(None)
        self._values = _Buffer(None)
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def keys(self) -> torch.Tensor | None:
        return self._keys.view()

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._keys = _Buffer(tensor)

    @property  # type: ignore[override]
    def values(self) -> torch.Tensor | None:
        return self._values.view()

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._values = _Buffer(tensor)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._keys.append(key_states), self._values.append(value_states)


def cache_factory(config: Any) -> NewCache:
    """Empty caches for `config`'s model: transformers' own layout, each plain `DynamicLayer` a
    `GrowingLayer` (other kinds, such as sliding-window layers, stay as they are)."""
    template = DynamicCache(config=config)
    template.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer for layer in template.layers
    ]

    def new() -> DynamicCache:
        cache = copy.copy(template)
        cache.layers = [
            GrowingLayer() if type(layer) is GrowingLayer else copy.deepcopy(layer)
            for layer in template.layers
        ]
        return cache

    return new


def filled_cache(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]], new: NewCache
) -> DynamicCache:
    """A cache holding these keys and values per layer as they are, without a copy: nothing
    writes into a tensor a cache was given (every update, selection or padding makes new ones or
    writes to buffers of its own), so a cache may start from views of another's."""
    cache = new()
    for layer, (keys, values) in zip(cache.layers, layers, strict=True):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return cache


def left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Pad a [rows, heads, columns, dim] cache tensor with `n` zero columns on the left."""
    return t if n == 0 else torch.nn.functional.pad(t, (0, 0, n, 0))
