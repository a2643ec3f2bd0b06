"""A Llama decoder layer with fused projections, for quantized CPU decoding.

transformers' `LlamaDecoderLayer` spends ~200 tensor ops and a dozen module calls per token and
layer (three projections, each rotary half apart, decorated forwards); with int4 weights the
kernels take less than half of a decoding step and this bookkeeping most of the rest. The fused
layer computes the same function with one kernel call for q/k/v, one for gate/up, `F.rms_norm`,
and the rotary embedding applied to queries and keys at once. It keeps transformers' contract
where it matters: the same KV cache `update` and the same attention function (sdpa, eager, ...)
with the mask the model built, so left padding, prefix caches and batching behave as before
(`tests/engine/test_quant.py` compares it with the original layer).

It does not record per-layer hidden states or attention weights (`output_hidden_states`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, eager_attention_forward

MakeLinear = Callable[..., nn.Module]


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

    def projections(self) -> Iterator[nn.Module]:
        yield from (self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj)

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
        cache = cache if cache is not None else past_key_values
        batch, length, _ = hidden_states.shape
        h = F.rms_norm(hidden_states, self.norm_shape, self.input_norm, self.norm_eps)
        qkv = self.qkv_proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
        rotated = self.n_heads + self.n_kv_heads
        qk, value = qkv[:, :rotated], qkv[:, rotated:]
        cos, sin = position_embeddings
        half = self.head_dim // 2
        turned = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
        qk = qk * cos.unsqueeze(1) + turned * sin.unsqueeze(1)
        query, key = qk[:, : self.n_heads], qk[:, self.n_heads :]
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, _ = attention(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
        )
        hidden_states = hidden_states + self.o_proj(out.reshape(batch, length, -1))
        h = F.rms_norm(hidden_states, self.norm_shape, self.post_attention_norm, self.norm_eps)
        gate, up = self.gate_up_proj(h).split(self.intermediate, dim=-1)
        return hidden_states + self.down_proj(self.act_fn(gate) * up)


def fuse_llama_layers(model: nn.Module, make: MakeLinear) -> list[FusedLlamaLayer]:
    """Replace every `LlamaDecoderLayer` of `model` in place; returns the new layers."""
    fused: list[FusedLlamaLayer] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LlamaDecoderLayer):
                layer = FusedLlamaLayer(child, make)
                setattr(parent, name, layer)
                fused.append(layer)
    return fused
