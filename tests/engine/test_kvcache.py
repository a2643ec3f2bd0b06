"""The scheduler's KV cache layers: `GrowingLayer` appends in place with room to spare, reads like
transformers' `DynamicLayer`, and never writes into a tensor it was handed (the prefix cache hands
out views of its entries); caches stacked from several prompts are left-padded."""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig
from transformers.cache_utils import DynamicLayer

from wordlist_generation.engine.kvcache import GrowingLayer, cache_factory, filled_cache
from wordlist_generation.engine.prefill import left_padded_mask, stack_caches

CONFIG = LlamaConfig(
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def _kv(rows: int, columns: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, 1, columns, 8, generator=torch.Generator().manual_seed(seed))


def test_a_growing_layer_reads_as_a_dynamic_layer_does():
    growing, plain = GrowingLayer(), DynamicLayer()
    for step, columns in enumerate([5, 1, 1, 40, 1, 3]):
        k, v = _kv(2, columns, step), _kv(2, columns, 100 + step)
        got = growing.update(k, v)
        want = plain.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert growing.get_seq_length() == plain.get_seq_length()
    # transformers' own batch operations assign keys and values; the layer takes them as given
    for layer in (growing, plain):
        layer.batch_select_indices(torch.tensor([1, 1, 0]))
    assert torch.equal(growing.keys, plain.keys) and torch.equal(growing.values, plain.values)
    k, v = _kv(3, 1, 7), _kv(3, 1, 8)
    assert torch.equal(growing.update(k, v)[0], plain.update(k, v)[0])


def test_appending_writes_in_place_and_copies_only_to_grow():
    layer = GrowingLayer()
    layer.update(_kv(1, 4, 0), _kv(1, 4, 1))
    buffer = layer._keys.tensor
    assert buffer is not None and buffer.shape[-2] > 4  # room to spare
    for step in range(10):
        layer.update(_kv(1, 1, 2 + step), _kv(1, 1, 50 + step))
    assert layer._keys.tensor is buffer  # ten steps, no copy
    assert layer.keys.shape[-2] == 14


def test_a_tensor_handed_to_a_cache_is_never_written():
    entry_k, entry_v = _kv(1, 6, 0), _kv(1, 6, 1)
    saved = entry_k.clone(), entry_v.clone()
    new = cache_factory(CONFIG)
    cache = filled_cache([(entry_k[:, :, :4], entry_v[:, :, :4])] * 2, new)  # views, as reused
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    for step in range(3):
        for i in range(2):
            cache.update(_kv(1, 1, 10 + step), _kv(1, 1, 20 + step), i)
    assert torch.equal(entry_k, saved[0]) and torch.equal(entry_v, saved[1])
    assert cache.get_seq_length() == 7
    assert torch.equal(cache.layers[0].keys[:, :, :4], entry_k[:, :, :4])


def test_prompts_stack_left_padded():
    new = cache_factory(CONFIG)
    caches = []
    for columns in (3, 5, 0):
        cache = new()
        if columns:
            for i in range(2):
                cache.update(_kv(1, columns, i), _kv(1, columns, 10 + i), i)
        caches.append((cache, columns))
    stacked = stack_caches(caches, new)
    assert isinstance(stacked, DynamicCache)
    keys = stacked.layers[1].keys
    assert keys.shape == (3, 1, 5, 8)
    assert torch.equal(keys[0, :, 2:], caches[0][0].layers[1].keys[0])
    assert torch.equal(keys[0, :, :2], torch.zeros(1, 2, 8))
    assert torch.equal(keys[2], torch.zeros(1, 5, 8))
    assert left_padded_mask([3, 5, 0], torch.device("cpu")).tolist() == [
        [0, 0, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0],
    ]
