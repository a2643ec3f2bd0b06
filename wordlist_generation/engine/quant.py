"""Weight-only quantized linear layers for decoding on a CPU (`CPU_QUANTIZATION`).

Decoding one token reads every weight once, so on a CPU the fp32 weights' bytes (~540 MB for
SmolLM2-135M) bound the speed. int8 (one symmetric scale per output channel) stores them in a
quarter of that, int4 (groups of 32 input columns, each with a scale and an offset) in less than a
fifth, and torch ships CPU kernels that multiply by such weights directly: `_weight_int8pack_mm`
and `_weight_int4pack_mm_for_cpu`. Measured facts this module is built on (`scripts/bench_decode.py`
and the README's benchmark notes):

- both kernels are fast only with bfloat16 activations (float32 and float16 inputs take a scalar
  fallback, 3-20x slower than fp32 GEMV), so a layer casts its input to bfloat16 and its output
  back: the residual stream, norms, rotary embeddings, attention and the KV cache stay in the
  model's dtype, and the logits leave the head with bfloat16's 8 significant bits;
- up to ~8 rows at once (int4: ~16) the kernels beat fp32 GEMM, so batched decoding keeps the
  gain; a long prompt's prefill is up to 2.2x slower than in fp32 (dequantizing per call to use
  GEMM instead costs more than that; dense copies kept for it cost memory instead: below);
- both kernels give a row the same result whatever else shares the call (fp32 GEMM does not), so
  quantized rows stay batch-invariant;
- the embedded model comes from a Q4_1 GGUF: its projections are already 4-bit codes with a
  scale and a minimum per group of 32, which int4's min/max groups recover exactly (the only loss
  is bfloat16 scales), while int8 per channel rounds them again: int4 is the closer of the two;
- the output head is tied to the embedding (Q8_0 in the GGUF): it gets its own int8 copy in both
  modes (int4 would make it the largest error by far: teacher-forced mean KL from fp32 5e-2
  instead of 2e-3), and the embedding lookup keeps reading the original table (one row per
  token: its size costs memory, not speed).

Llama-family decoder layers are also replaced by `fused_llama.FusedLlamaLayer` (one kernel call
for q/k/v, one for gate/up, fewer Python-level ops per token): with weights this small, per-step
overhead is a large share of a decoding step.

The kernels' arithmetic grows with the rows they multiply (int4 dequantizes its weights again for
every 4 rows), so past ~32 rows fp32 GEMM is faster, and a prompt is many rows. With `dense`
(`CPU_DENSE_PREFILL`), each fused projection also keeps its quantized weight dequantized to fp32
(the same values; 425 MB for the embedded model, more than the whole int4 model), and a prompt
pass of `DENSE_PASS_TOKENS` tokens or more multiplies by that copy (`fused_llama.LeanForward`;
the scheduler also reads every chunk of a prompt with that many tokens to read that way).
`scripts/bench_prefill.py` (bench_results/prefill.json, 2 cores, prompts x tokens, int4 /
dense): 1 x 9 65 / 71 ms, 1 x 16 73 / 73, 1 x 32 168 / 130, 1 x 64 260 / 176, 4 x 40 567 / 316,
16 x 53 3791 / 1690, 1 x 512 2336 / 1099 ms (an earlier run: 1 x 32 192 / 189). Decoding steps
(one token per row) always take the kernels, whatever the number of rows, so batched rows stay
batch-invariant.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

CpuQuantization = Literal["none", "int8", "int4"]
CPU_QUANTIZATIONS: tuple[str, ...] = get_args(CpuQuantization)
#: What the setting takes: a quantization, or `auto` (`resolve_cpu_quantization`).
CPU_QUANTIZATION_SETTINGS: tuple[str, ...] = ("auto", *CPU_QUANTIZATIONS)


def resolve_cpu_quantization(setting: str, *, embedded: bool) -> str:
    """The quantization `setting` means for a model: `auto` is int4 for the embedded model (its
    projections are 4-bit in its GGUF, so int4 reproduces them; its answers read as fp32's do:
    scripts/compare_quality.py) and none for any other, where int4 and int8 round the weights
    again and are a choice to make."""
    if setting not in CPU_QUANTIZATION_SETTINGS:
        raise ValueError(
            f"unknown CPU_QUANTIZATION {setting!r}; expected one of {CPU_QUANTIZATION_SETTINGS}"
        )
    if setting == "auto":
        return "int4" if embedded else "none"
    return setting


INT4_GROUP = 32
#: Relative weight error above which int4 is reported as lossy for a model: the embedded model's
#: projections come back within 5e-3 (bfloat16 scales alone), Gaussian weights at ~6e-2.
LOSSY_INT4 = 0.01
_KERNEL_DTYPE = torch.bfloat16
#: Weights quantized at a time (elements): bounds the float temporaries to a few MB.
_CHUNK_ELEMENTS = 1 << 20
#: Tokens from which a prompt pass, and every pass of a prompt with that many tokens to read, runs
#: over the dense copies: where fp32 GEMM draws level with the int4 kernels on 2 AVX2 cores
#: (scripts/bench_prefill.py).
DENSE_PASS_TOKENS = 32


def _stacked_weight(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights (and biases) of layers sharing one input, stacked along the output rows."""
    weights = [lin.weight.detach().float() for lin in linears]
    weight = weights[0] if len(weights) == 1 else torch.cat(weights)
    if all(lin.bias is None for lin in linears):
        return weight, None
    bias = torch.cat(
        [
            lin.bias.detach() if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
            for lin in linears
        ]
    )
    return weight, bias


class QuantizedLinear(nn.Module):
    """A `nn.Linear` stand-in over a quantized weight; several linears sharing an input fuse into
    one (their outputs side by side, in order).

    `weight` holds the quantized weight with `out_features` rows, so code that reads
    `weight.shape[0]` (the vocabulary size of an output head) keeps working. `weight_error` is
    ||W - W_q|| / ||W||, measured once when quantizing. Rows are quantized a chunk at a time, so
    the float temporaries stay a few MB even for the 49152-row output head. With `dense` (and
    float32 weights), `dense_weight` keeps the quantized weight dequantized, for `dense_kernel`.
    """

    kind: str = ""
    weight: torch.Tensor
    bias: torch.Tensor | None
    dense_weight: torch.Tensor | None

    def __init__(self, *linears: nn.Linear, dense: bool = False) -> None:
        super().__init__()
        if not linears or len({lin.in_features for lin in linears}) != 1:
            raise ValueError("fused linears must share their input width")
        dense = dense and all(lin.weight.dtype == torch.float32 for lin in linears)
        weight, bias = _stacked_weight(linears)
        self.in_features = linears[0].in_features
        self.out_features = weight.shape[0]
        self.register_buffer("bias", bias)
        rows = max(1, _CHUNK_ELEMENTS // self.in_features)
        parts, restored_parts, squared_error = [], [], 0.0
        for start in range(0, self.out_features, rows):
            chunk = weight[start : start + rows]
            stored, restored = self._quantize_rows(chunk)
            squared_error += float((restored - chunk).square_().sum())
            parts.append(stored)
            if dense:
                restored_parts.append(restored)
        self._store(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))
        self.register_buffer("dense_weight", torch.cat(restored_parts) if dense else None)
        self.weight_error = math.sqrt(squared_error) / max(float(weight.norm()), 1e-30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x.reshape(-1, self.in_features).to(_KERNEL_DTYPE)).to(x.dtype)
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, in_features] bfloat16 -> [rows, out_features] bfloat16 (the kernel, no bias)."""
        return self.bound_matmul()(x)

    def bound_matmul(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """`matmul` as a function closed over this layer's tensors."""
        raise NotImplementedError

    def kernel(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """This layer as a function of [rows, in_features] rows in any float dtype, closed over its
        tensors. A decoding step of the fused Llama layers makes ~120 projections, and reading a
        module's buffer goes through `nn.Module.__getattr__` (~1 us; ~0.5 ms a step in all)."""
        matmul, bias = self.bound_matmul(), self.bias

        def run(x: torch.Tensor) -> torch.Tensor:
            y = matmul(x.to(_KERNEL_DTYPE)).to(x.dtype)
            return y if bias is None else y + bias

        return run

    def dense_kernel(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """This layer through fp32 GEMM over `dense_weight` (float32 rows in, float32 out), closed
        over its tensors; None without a dense copy."""
        weight, bias = self.dense_weight, self.bias
        if weight is None:
            return None
        return lambda x: F.linear(x, weight, bias)

    def _quantize_rows(self, weight: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Quantize float32 rows: (what `_store` takes, per row first; the rows dequantized)."""
        raise NotImplementedError

    def _store(self, *stored: torch.Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.kind}, in_features={self.in_features}, out_features={self.out_features}"


class Int8Linear(QuantizedLinear):
    """int8 weight, one symmetric scale per output channel."""

    kind = "int8"
    scales: torch.Tensor

    def _quantize_rows(self, weight: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        scales = scales.to(_KERNEL_DTYPE).float()  # the kernel takes them in bfloat16
        q = torch.div(weight, scales[:, None]).round_().clamp_(-127, 127)
        codes = q.to(torch.int8)
        return (codes, scales), q.mul_(scales[:, None])

    def _store(self, *stored: torch.Tensor) -> None:
        codes, scales = stored
        self.register_buffer("weight", codes.contiguous())
        self.register_buffer("scales", scales.to(_KERNEL_DTYPE).contiguous())

    def bound_matmul(self) -> Callable[[torch.Tensor], torch.Tensor]:
        op, weight, scales = torch.ops.aten._weight_int8pack_mm, self.weight, self.scales
        return lambda x: op(x, weight, scales)


class Int4Linear(QuantizedLinear):
    """int4 weight in groups of `INT4_GROUP` input columns, each with a scale and an offset.

    A weight is `(q - 8) * scale + zero` with q in 0..15 (the kernel's convention); scale and zero
    come from the group's min and max and are rounded to bfloat16 before q is chosen, so the codes
    absorb that rounding. `weight` is the kernel's packed layout ([out_features, in_features / 2]).
    """

    kind = "int4"
    scales_zeros: torch.Tensor

    @staticmethod
    def fits(*linears: nn.Linear) -> bool:
        return linears[0].in_features % INT4_GROUP == 0

    def _quantize_rows(self, weight: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        groups = weight.reshape(weight.shape[0], -1, INT4_GROUP)
        lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        scale = scale.to(_KERNEL_DTYPE).float()
        zero = (lo + 8 * scale).to(_KERNEL_DTYPE).float()
        q = (groups - zero[..., None]).div_(scale[..., None]).round_().add_(8).clamp_(0, 15)
        codes = q.to(torch.int32).reshape(weight.shape)
        restored = q.sub_(8).mul_(scale[..., None]).add_(zero[..., None])
        return (codes, scale, zero), restored.reshape(weight.shape)

    def _store(self, *stored: torch.Tensor) -> None:
        codes, scale, zero = stored
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        self.register_buffer("weight", packed)
        # [in / group, out, 2]: the layout the kernel reads.
        scales_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(_KERNEL_DTYPE)
        self.register_buffer("scales_zeros", scales_zeros.contiguous())

    def bound_matmul(self) -> Callable[[torch.Tensor], torch.Tensor]:
        op, weight, scales_zeros = (
            torch.ops.aten._weight_int4pack_mm_for_cpu,
            self.weight,
            self.scales_zeros,
        )
        return lambda x: op(x, weight, INT4_GROUP, scales_zeros)


def projection_factory(mode: str, dense: bool = False) -> Callable[..., QuantizedLinear]:
    """The layer class for a model's projections under `mode` (int4 where the width allows),
    with dense copies for prompt passes if `dense`."""

    def make(*linears: nn.Linear) -> QuantizedLinear:
        if mode == "int4" and Int4Linear.fits(*linears):
            return Int4Linear(*linears, dense=dense)
        return Int8Linear(*linears, dense=dense)

    return make


@dataclass
class QuantizationReport:
    """What `quantize_model` did: layer counts by kind, fused decoder layers, weight errors."""

    mode: str
    layers: dict[str, int] = field(default_factory=dict)
    fused_decoder_layers: int = 0
    max_weight_error: float = 0.0
    head_weight_error: float | None = None
    #: Bytes of the dense copies kept for prompt passes (0 without `CPU_DENSE_PREFILL`).
    dense_bytes: int = 0

    @property
    def lossy_int4(self) -> bool:
        return self.layers.get("int4", 0) > 0 and self.max_weight_error > LOSSY_INT4

    def add(self, layer: QuantizedLinear, *, head: bool = False) -> None:
        self.layers[layer.kind] = self.layers.get(layer.kind, 0) + 1
        if layer.dense_weight is not None:
            dense = layer.dense_weight
            self.dense_bytes += dense.numel() * dense.element_size()
        if head:
            self.head_weight_error = layer.weight_error
        else:
            self.max_weight_error = max(self.max_weight_error, layer.weight_error)


def quantize_model(
    model: nn.Module, mode: str, *, dense_prefill: bool = False
) -> QuantizationReport:
    """Quantize the model's linear layers in place for CPU decoding; `none` leaves it untouched.

    Llama-family decoder layers are fused first (their projections made by `projection_factory`,
    with dense copies for prompt passes if `dense_prefill`); any other linear layer is quantized
    on its own; the output head gets an int8 copy of its own and the input embedding stays as it
    is.
    """
    if mode not in CPU_QUANTIZATIONS:
        raise ValueError(f"unknown CPU quantization {mode!r}; expected one of {CPU_QUANTIZATIONS}")
    report = QuantizationReport(mode)
    if mode == "none":
        return report
    from .fused_llama import fuse_llama_layers

    make = projection_factory(mode)
    for layer in fuse_llama_layers(model, projection_factory(mode, dense_prefill)):
        report.fused_decoder_layers += 1
        for projection in layer.projections():
            report.add(projection)
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                is_head = child is head
                layer = Int8Linear(child) if is_head else make(child)
                setattr(parent, name, layer)
                report.add(layer, head=is_head)
    # The head no longer shares a tensor with the embedding: nothing may tie them back.
    model.config.tie_word_embeddings = False
    return report
