"""A Llama decoder layer with fused projections, for quantized CPU decoding.

transformers' `LlamaDecoderLayer` spends ~200 tensor ops and a dozen module calls per token and
layer (three projections, each rotary half apart, decorated forwards); with int4 weights the
kernels take less than half of a decoding step and this bookkeeping most of the rest. The fused
layer computes the same function with one kernel call for q/k/v, one for gate/up, `F.rms_norm`,
and the rotary embedding applied to queries and keys at once. It keeps transformers' contract
where it matters: the same KV cache `update` and the same attention function (sdpa, eager, ...)
with the mask the model built, so left padding, prefix caches and batching behave as before
(`tests/engine/test_quant.py` compares it with the original layer).

A model whose decoder layers are all fused also gets `LeanForward` in place of the Llama model's
own forward pass: one mask and one pair of rotary tables per pass, the residual stream as a 2-D
[tokens, hidden] tensor, the projections as closures over their tensors, small matrix products
for the attention of a decoding step, without transformers' per-call machinery. It computes the
same logits to the bit (prompt passes over dense copies aside: `quant.DENSE_PASS_TOKENS`).
Measured on 2 cores with the embedded model under int4 (greedy, the scheduler's in-place KV
cache, `engine.kvcache`): a one-row decoding step took ~19.7 ms through
transformers' model forward, ~15 ms through the first `LeanForward` and ~13.1 ms through this
one (a 16-row step: ~61 and ~57 ms), of which the int4 and int8 kernels are ~7 ms (~39 ms at 16
rows). Hidden states and attention weights (`output_hidden_states`, `output_attentions`) come from
the model's own forward, which runs the same fused layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaModel,
    eager_attention_forward,
)

from .quant import DENSE_PASS_TOKENS

MakeLinear = Callable[..., nn.Module]


class _Parts(NamedTuple):
    """What a fused layer's `step` reads on every call, as plain references: a module's
    parameters, buffers and submodules are found through `nn.Module.__getattr__`, which costs
    about a microsecond a lookup, some 500 a decoding step."""

    qkv: Callable[[torch.Tensor], torch.Tensor]
    o: Callable[[torch.Tensor], torch.Tensor]
    gate_up: Callable[[torch.Tensor], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]
    act: Callable[[torch.Tensor], torch.Tensor]
    input_norm: torch.Tensor
    post_norm: torch.Tensor


def _projection(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A projection of [rows, in_features] rows: a quantized layer's closure over its tensors,
    any other layer's own forward."""
    kernel = getattr(module, "kernel", None)
    return kernel() if kernel is not None else module.forward


def _dense_projection(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The same projection through fp32 GEMM over a quantized layer's dense copy
    (`QuantizedLinear.dense_kernel`); None where the layer keeps none."""
    dense_kernel = getattr(module, "dense_kernel", None)
    return dense_kernel() if dense_kernel is not None else None


class FusedLlamaLayer(nn.Module):
    """`LlamaDecoderLayer` with q/k/v and gate/up each fused into one layer made by `make`."""

    def __init__(self, layer: LlamaDecoderLayer, make: MakeLinear) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        # What transformers' attention functions read from the module they are given.
        self.config = attn.config
        self.layer_idx = attn.layer_idx
        self.head_dim = attn.head_dim
        self.num_key_value_groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.is_causal = True
        self.n_heads = attn.q_proj.out_features // attn.head_dim
        self.n_kv_heads = attn.k_proj.out_features // attn.head_dim
        self.intermediate = mlp.gate_proj.out_features
        self.act_fn = mlp.act_fn
        self.qkv_proj = make(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o_proj = make(attn.o_proj)
        self.gate_up_proj = make(mlp.gate_proj, mlp.up_proj)
        self.down_proj = make(mlp.down_proj)
        self.input_norm = layer.input_layernorm.weight
        self.post_attention_norm = layer.post_attention_layernorm.weight
        self.norm_eps = layer.input_layernorm.variance_epsilon
        self.norm_shape = (self.input_norm.shape[0],)
        self._parts: _Parts | None = None  # what `step` reads, made at its first call
        self._dense_parts: _Parts | None = None  # the same over the dense copies

    def projections(self) -> Iterator[nn.Module]:
        yield from (self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj)

    @property
    def has_dense(self) -> bool:
        """Whether every projection keeps a dense copy (`QuantizedLinear.dense_weight`)."""
        return all(_dense_projection(p) is not None for p in self.projections())

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """transformers' calling convention: the mask the model built, its attention function."""
        cache = cache if cache is not None else past_key_values
        assert position_embeddings is not None
        query, key, value = self._attention_inputs(hidden_states, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, _ = attention(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
        )
        return self._after_attention(hidden_states, out)

    def step(
        self,
        x: torch.Tensor,
        shape: tuple[int, int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: DynamicCache | None,
        dense: bool = False,
    ) -> torch.Tensor:
        """The same function for `LeanForward`, over the residual stream as [rows * length,
        hidden] (`shape` is (rows, length)): a mask built once per forward pass, rotary tables
        prepared once per pass (`cos`, and `sin` signed for a rotation by `roll`, both
        [rows, 1, length, head_dim]), the projections as closures over their tensors
        (`QuantizedLinear.kernel`, or `dense_kernel` with `dense`), and torch's
        scaled-dot-product attention over the cache's keys and values (`_one_query_attention`
        for a decoding step)."""
        if dense:
            parts = self._dense_parts or self._make_parts(dense=True)
        else:
            parts = self._parts or self._make_parts()
        batch, length = shape
        heads, dim = self.n_heads, self.head_dim
        h = F.rms_norm(x, self.norm_shape, parts.input_norm, self.norm_eps)
        qkv = parts.qkv(h).view(batch, length, -1, dim).transpose(1, 2)
        rotated = heads + self.n_kv_heads
        qk = qkv[:, :rotated]
        qk = qk * cos + qk.roll(dim // 2, -1) * sin
        key, value = qk[:, heads:], qkv[:, rotated:]
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        if length == 1:
            out = _one_query_attention(qk[:, :heads], key, value, mask, self.scaling)
        else:
            out = F.scaled_dot_product_attention(
                qk[:, :heads], key, value, attn_mask=mask, scale=self.scaling, enable_gqa=True
            )
            out = out.transpose(1, 2).reshape(batch * length, -1)
        x = x + parts.o(out)
        h = F.rms_norm(x, self.norm_shape, parts.post_norm, self.norm_eps)
        gate, up = parts.gate_up(h).split(self.intermediate, dim=-1)
        return x + parts.down(parts.act(gate) * up)

    def _make_parts(self, dense: bool = False) -> _Parts:
        project = _dense_projection if dense else _projection
        parts = _Parts(
            qkv=project(self.qkv_proj),
            o=project(self.o_proj),
            gate_up=project(self.gate_up_proj),
            down=project(self.down_proj),
            act=self.act_fn.forward,
            input_norm=self.input_norm,
            post_norm=self.post_attention_norm,
        )
        if dense:
            self._dense_parts = parts
        else:
            self._parts = parts
        return parts

    # The projections and the activation are called through `forward`: nn.Module's call
    # machinery (hooks, which nothing here sets) costs ~5 us a call, ~0.6 ms a decoding step.

    def _attention_inputs(
        self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries and keys (rotated) and values, [batch, heads, length, head_dim] each."""
        batch, length, _ = hidden_states.shape
        h = F.rms_norm(hidden_states, self.norm_shape, self.input_norm, self.norm_eps)
        qkv = self.qkv_proj.forward(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
        rotated = self.n_heads + self.n_kv_heads
        qk, value = qkv[:, :rotated], qkv[:, rotated:]
        half = self.head_dim // 2
        turned = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
        qk = qk * cos.unsqueeze(1) + turned * sin.unsqueeze(1)
        return qk[:, : self.n_heads], qk[:, self.n_heads :], value

    def _after_attention(self, hidden_states: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The output projection and the MLP, each added to the residual stream; `out` is the
        attention's [batch, length, heads, head_dim]."""
        batch, length, _ = hidden_states.shape
        hidden_states = hidden_states + self.o_proj.forward(out.reshape(batch, length, -1))
        h = F.rms_norm(hidden_states, self.norm_shape, self.post_attention_norm, self.norm_eps)
        gate, up = self.gate_up_proj.forward(h).split(self.intermediate, dim=-1)
        return hidden_states + self.down_proj.forward(self.act_fn.forward(gate) * up)


def _one_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Attention of one new token per row (a decoding step), as [rows, heads * head_dim]: each
    key/value head's group of query heads as one small matrix product. `bias` is the additive
    mask [rows, 1, 1, columns] (0 or -inf), or None. torch's fused CPU kernel is tuned for long
    queries: with one query per row it took ~2x as long from 8 rows on (~250 against ~115 us a
    layer at 16 rows of 130 columns)."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim) * scale
    scores = torch.matmul(grouped, key.transpose(-1, -2))
    if bias is not None:
        scores += bias
    out = torch.matmul(torch.softmax(scores, dim=-1), value)
    return out.reshape(batch, heads * dim)


def _attention_mask(padding: torch.Tensor | None, length: int, past: int) -> torch.Tensor | None:
    """The boolean mask [batch or 1, 1, length, past + length] of a forward pass: causal over the
    new columns, and no padding column (0 in the 2-D `padding` mask) seen by any query. A
    padding query sees itself, so that no row of the softmax is empty (its output is never read).
    None where nothing is masked: one new column per row and no padding."""
    padded = padding is not None and not bool(padding.all())
    if length == 1 and not padded:
        return None
    columns = past + length
    device = padding.device if padding is not None else None
    rows = torch.arange(length, device=device)[:, None] + past
    keys = torch.arange(columns, device=device)[None, :]
    mask = (keys <= rows)[None, None]
    if padded:
        assert padding is not None
        mask = (mask & padding[:, None, None, :].bool()) | (keys == rows)[None, None]
    return mask


class LeanForward:
    """A Llama model's forward pass over fused layers without transformers' per-call machinery
    (argument merging, output capture, mask building through the generic mask interface): at
    small weights that machinery is a large share of a decoding step.

    It takes what the engines and `generate` pass (token ids, a 2-D padding mask, position ids, a
    `DynamicCache` or none) and returns what the model's own forward returns. Anything else
    (input embeddings, a 4-D mask, another cache, hidden states or attentions asked for) goes to
    the model's own forward, which runs the same fused layers."""

    def __init__(self, model: nn.Module, layers: list[FusedLlamaLayer]) -> None:
        self.model = model
        self.layers = layers
        self.original = model.forward
        self._signs: torch.Tensor | None = None
        #: Whether prompt passes of `DENSE_PASS_TOKENS` or more run over dense copies.
        self.dense = all(layer.has_dense for layer in layers)

    def __call__(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Any = None,
        dense_prefill: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """`dense_prefill` says whether this pass multiplies by the dense copies; None decides
        by its size: a prompt pass of `DENSE_PASS_TOKENS` tokens or more does, a decoding step
        (one token per row) never does, which keeps each decoding row batch-invariant. The
        scheduler decides per pass (`engine.scheduler`), so that a long prompt reads all its
        chunks the same way."""
        cache = cache if cache is not None else past_key_values
        config = self.model.config
        if (
            input_ids is None
            or inputs_embeds is not None
            or (attention_mask is not None and attention_mask.dim() != 2)
            or (cache is not None and type(cache) is not DynamicCache)
            or kwargs.get("output_attentions", config.output_attentions)
            or kwargs.get("output_hidden_states", config.output_hidden_states)
        ):
            return self.original(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                **kwargs,
            )
        if cache is None and (use_cache if use_cache is not None else config.use_cache):
            cache = DynamicCache(config=config)
        past = cache.get_seq_length() if cache is not None else 0
        length = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device)[None]
        hidden_states = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(hidden_states, position_ids=position_ids)
        # rotate_half(x) * sin == x.roll(half) * signed sin, exactly (the sign moves, nothing
        # rounds differently).
        cos, sin = cos.unsqueeze(1), (sin * self._rotation_signs(sin)).unsqueeze(1)
        mask = _attention_mask(attention_mask, length, past)
        if mask is not None and length == 1:  # `_one_query_attention` adds its mask
            mask = torch.zeros(mask.shape, dtype=hidden_states.dtype).masked_fill_(
                ~mask, float("-inf")
            )
        batch = input_ids.shape[0]
        x = hidden_states.reshape(batch * length, -1)
        if dense_prefill is None:  # one token per row is a decoding step: the kernels
            dense_prefill = length > 1 and batch * length >= DENSE_PASS_TOKENS
        dense = self.dense and dense_prefill
        for layer in self.layers:
            x = layer.step(x, (batch, length), cos, sin, mask, cache, dense)
        return BaseModelOutputWithPast(
            last_hidden_state=self.model.norm(x.view(batch, length, -1)), cache=cache
        )

    def _rotation_signs(self, like: torch.Tensor) -> torch.Tensor:
        """[-1] * half + [1] * half, in `like`'s dtype and device."""
        signs = self._signs
        if signs is None or signs.dtype != like.dtype or signs.device != like.device:
            half = like.shape[-1] // 2
            signs = torch.ones(2 * half, dtype=like.dtype, device=like.device)
            signs[:half] = -1
            self._signs = signs
        return signs


def has_dense_prefill(model: nn.Module) -> bool:
    """Whether `model` (a causal LM) reads prompt passes through dense copies: its decoder runs
    `LeanForward` and every layer keeps dense copies (`CPU_DENSE_PREFILL`)."""
    forward = getattr(getattr(model, "model", None), "forward", None)
    return isinstance(forward, LeanForward) and forward.dense


def fuse_llama_layers(model: nn.Module, make: MakeLinear) -> list[FusedLlamaLayer]:
    """Replace every `LlamaDecoderLayer` of `model` in place; returns the new layers. A Llama
    model whose decoder layers are all fused then runs them through `LeanForward`."""
    fused: list[FusedLlamaLayer] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LlamaDecoderLayer):
                layer = FusedLlamaLayer(child, make)
                setattr(parent, name, layer)
                fused.append(layer)
    for module in list(model.modules()):
        if isinstance(module, LlamaModel):
            layers = list(module.layers[: module.config.num_hidden_layers])
            if layers and all(isinstance(layer, FusedLlamaLayer) for layer in layers):
                module.forward = LeanForward(module, layers)
    return fused
