"""CPU quantization (`CPU_QUANTIZATION`): quantized linears against fp32, the fused Llama layer
against transformers' own, a quantized tiny model generating (constrained output stays compliant),
and the setting validated."""

from __future__ import annotations

import asyncio
import copy
from typing import get_args

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from wordcheck import violations

from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.wordlist import WordlistRegistry, wordlist_compiler
from wordlist_generation.engine.fused_llama import (
    FusedLlamaLayer,
    LeanForward,
    fuse_llama_layers,
    has_dense_prefill,
)
from wordlist_generation.engine.hf import HFEngine
from wordlist_generation.engine.loader import ModelLoadError, load_model, quantize_on_cpu
from wordlist_generation.engine.params import GenerationJob, SamplingParams
from wordlist_generation.engine.quant import (
    CPU_QUANTIZATION_SETTINGS,
    DENSE_PASS_TOKENS,
    INT4_GROUP,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    quantize_model,
    resolve_cpu_quantization,
)
from wordlist_generation.settings import REPO_ROOT, Settings

# bfloat16 keeps 8 significant bits: rounding the input and the output of a layer each move a value
# by at most 2^-9 relative, ~1.6e-3 in the norm of a whole output; with weights that quantize
# exactly that is the only error left. 5e-3 leaves room for cancellation within single sums.
BF16_ROUNDING = 5e-3

LAYERS = {"int8": Int8Linear, "int4": Int4Linear}


def _linear(out_f: int, in_f: int, weight: torch.Tensor, bias: bool = False) -> nn.Linear:
    layer = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias:
            layer.bias.normal_()
    return layer


def _exact_weight(kind: str, out_f: int, in_f: int, gen: torch.Generator) -> torch.Tensor:
    """A weight on the quantization grid, with bfloat16 scales (what a 4-/8-bit checkpoint holds)."""
    if kind == "int8":
        q = torch.randint(-127, 128, (out_f, in_f), generator=gen).float()
        q[:, 0] = 127  # the row's maximum fixes its scale
        scale = (torch.rand(out_f, 1, generator=gen) / 50).bfloat16().float()
        return q * scale
    groups = in_f // INT4_GROUP
    q = torch.randint(0, 16, (out_f, groups, INT4_GROUP), generator=gen).float()
    q[..., 0], q[..., 1] = 0, 15  # min and max present, as in a Q4_1 block
    scale = (torch.rand(out_f, groups, 1, generator=gen) / 50).bfloat16().float()
    zero = (torch.randn(out_f, groups, 1, generator=gen) / 10).bfloat16().float()
    return ((q - 8) * scale + zero).reshape(out_f, in_f)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_weights_on_the_grid_come_back_within_bfloat16_rounding(kind, rows):
    gen = torch.Generator().manual_seed(rows)
    linear = _linear(96, 128, _exact_weight(kind, 96, 128, gen))
    layer = LAYERS[kind](linear)
    assert layer.weight_error < 1e-6
    x = torch.randn(2, rows, 128, generator=gen)
    with torch.inference_mode():
        assert _rel(layer(x), linear(x)) < BF16_ROUNDING


@pytest.mark.parametrize(("kind", "weight_bound"), [("int8", 0.01), ("int4", 0.08)])
def test_any_weight_errs_by_its_rounding_step_and_no_more(kind, weight_bound):
    """Gaussian weights: int8 rounds to 1/254 of a row's range, int4 to 1/30 of a group's."""
    gen = torch.Generator().manual_seed(0)
    linear = _linear(64, 96, torch.randn(64, 96, generator=gen), bias=True)
    layer = LAYERS[kind](linear)
    assert 0 < layer.weight_error < weight_bound
    x = torch.randn(7, 96, generator=gen)
    with torch.inference_mode():
        assert _rel(layer(x), linear(x)) < layer.weight_error + BF16_ROUNDING


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_fused_linears_equal_the_separate_ones(kind):
    gen = torch.Generator().manual_seed(1)
    parts = [_linear(n, 64, torch.randn(n, 64, generator=gen)) for n in (64, 32, 32)]
    fused = LAYERS[kind](*parts)
    x = torch.randn(3, 64, generator=gen)
    with torch.inference_mode():
        separate = torch.cat([LAYERS[kind](p)(x) for p in parts], dim=-1)
        assert torch.equal(fused(x), separate)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_dense_copy_holds_the_quantized_weight_itself(kind):
    """`dense_kernel` multiplies by the weight the kernel multiplies by, in fp32: on the grid,
    the original weight to its last bits; off it, the quantized one (its own weight error)."""
    gen = torch.Generator().manual_seed(2)
    on_grid = _linear(96, 128, _exact_weight(kind, 96, 128, gen), bias=True)
    layer = LAYERS[kind](on_grid, dense=True)
    assert torch.allclose(layer.dense_weight, on_grid.weight, rtol=1e-6, atol=0)
    x = torch.randn(40, 128, generator=gen)
    dense = layer.dense_kernel()
    with torch.inference_mode():
        assert torch.allclose(dense(x), on_grid(x), rtol=1e-5, atol=1e-5)
        assert _rel(dense(x), layer(x)) < BF16_ROUNDING
    gaussian = _linear(64, 96, torch.randn(64, 96, generator=gen))
    layer = LAYERS[kind](gaussian, dense=True)
    x = torch.randn(40, 96, generator=gen)
    with torch.inference_mode():  # the kernel's product, not the original weight's
        assert _rel(layer.dense_kernel()(x), layer(x)) < BF16_ROUNDING
    # None without the option, and for weights that are not float32 (GEMM would not pay).
    assert LAYERS[kind](gaussian).dense_kernel() is None
    assert LAYERS[kind](gaussian.to(torch.bfloat16), dense=True).dense_weight is None


def test_long_prompt_passes_read_through_the_dense_copies_and_decoding_steps_never(
    tiny_model_dir, tiny, dense_rows
):
    dense = load_model(str(tiny_model_dir), cpu_quantization="int4")  # on by default
    plain = load_model(str(tiny_model_dir), cpu_quantization="int4", cpu_dense_prefill=False)
    assert has_dense_prefill(dense.model) and not has_dense_prefill(plain.model)
    per_pass = 4 * tiny.model.config.num_hidden_layers  # q/k/v, o, gate/up, down
    rows = dense_rows
    gen = torch.Generator().manual_seed(3)
    vocab = tiny.model.config.vocab_size
    with torch.inference_mode():
        # Passes left to decide by their size: rows x columns from DENSE_PASS_TOKENS up go
        # dense, below do not (the scheduler also reads every chunk of a long prompt dense:
        # test_scheduler.py).
        for shape, expect in [((1, 8), 0), ((1, 40), per_pass), ((8, 4), per_pass)]:
            rows.clear()
            ids = torch.randint(0, vocab, shape, generator=gen)
            got = dense.model(input_ids=ids).logits
            assert len(rows) == expect, shape
            assert all(r == shape[0] * shape[1] for r in rows)
            want = plain.model(input_ids=ids).logits
            if expect == 0:  # the same kernels: the same logits to the bit
                assert torch.equal(got, want)
            else:  # the same weights, fp32 activations instead of bfloat16 ones
                assert _rel(got, want) < 3e-2
                assert torch.equal(got.argmax(-1), want.argmax(-1))
        # A decoding step of as many rows as a long prompt has tokens: the kernels, always.
        batch = 2 * DENSE_PASS_TOKENS
        prompt = torch.randint(0, vocab, (batch, 3), generator=gen)
        cache = plain.model(input_ids=prompt, use_cache=True).past_key_values
        caches = [copy.deepcopy(cache), cache]  # one prompt read for both
        rows.clear()
        step = torch.randint(0, vocab, (batch, 1), generator=gen)
        got = dense.model(input_ids=step, past_key_values=caches[0], use_cache=True).logits
        want = plain.model(input_ids=step, past_key_values=caches[1], use_cache=True).logits
        assert rows == []
        assert torch.equal(got, want)


def _float_linear(*linears: nn.Linear) -> nn.Linear:
    """The fusion alone, in fp32: one nn.Linear over the stacked weights."""
    weight = torch.cat([lin.weight.detach() for lin in linears])
    return _linear(weight.shape[0], weight.shape[1], weight)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def _batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    messages = [[{"role": "user", "content": t}] for t in texts]
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
    )


def test_the_fused_layer_computes_what_transformers_layer_does(tiny):
    """Left-padded prefill, then decoding steps through the KV cache: same logits, same tokens."""
    fused = copy.deepcopy(tiny.model)
    assert len(fuse_llama_layers(fused, _float_linear)) == tiny.model.config.num_hidden_layers
    assert all(isinstance(layer, FusedLlamaLayer) for layer in fused.model.layers)
    assert isinstance(fused.model.forward, LeanForward)
    inputs = _batch(tiny.tokenizer, ["Hi", "Tell me a long story about the sea and a ship."])
    with torch.inference_mode():
        want = tiny.model(**inputs).logits
        got = fused(**inputs).logits
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
        # What the lean forward leaves to the model's own (here: hidden states asked for) runs
        # the same fused layers to the same logits.
        full = fused(**inputs, output_hidden_states=True)
        assert full.hidden_states is not None
        assert torch.allclose(full.logits, want, atol=1e-5, rtol=1e-4)
        kwargs = {"max_new_tokens": 8, "do_sample": False}
        assert torch.equal(
            fused.generate(**inputs, **kwargs), tiny.model.generate(**inputs, **kwargs)
        )


@pytest.fixture(scope="module")
def int4_engine(tiny_model_dir):
    engine = HFEngine(load_model(str(tiny_model_dir), cpu_quantization="int4"), torch_threads=1)
    yield engine
    engine.close()


def test_a_quantized_model_keeps_its_embedding_and_quantizes_its_head(int4_engine, tiny):
    model = int4_engine.model
    assert isinstance(model.lm_head, Int8Linear)
    assert torch.equal(
        model.get_input_embeddings().weight, tiny.model.get_input_embeddings().weight
    )
    assert int4_engine.vocab_size == tiny.model.config.vocab_size
    kinds = {type(m) for m in model.modules() if isinstance(m, QuantizedLinear)}
    assert kinds == {Int4Linear, Int8Linear}
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_a_quantized_model_generates_and_constrained_output_is_compliant(int4_engine):
    compiler = wordlist_compiler(int4_engine.tokenizer, WordlistRegistry(REPO_ROOT / "wordlists"))
    constraint = compiler.compile(WordlistSpec("en", 300)).constraint
    prompt = int4_engine.encode_chat([{"role": "user", "content": "Tell me about the sea."}])
    free = GenerationJob(prompt_ids=prompt, params=SamplingParams(max_new_tokens=24))
    bound = GenerationJob(
        prompt_ids=prompt, params=SamplingParams(max_new_tokens=24), constraint=constraint
    )
    [out_free] = int4_engine.generate([free])
    [out_bound] = int4_engine.generate([bound])
    assert len(out_free.choices[0].token_ids) > 0
    text = out_bound.choices[0].text
    assert text and out_bound.choices[0].finish_reason in ("stop", "length")
    assert constraint.check(text).ok
    assert violations(text, "en", 300) == []

    # The server's path (continuous batching) decodes the same rows to the same compliant text.
    async def served() -> list:
        return await int4_engine.submit([bound])

    [again] = asyncio.run(served())
    assert again.choices[0].text == text

    # Read in one pass with another prompt (the lean forward over a left-padded batch), each
    # row still decodes what it decodes alone.
    other = int4_engine.encode_chat([{"role": "user", "content": "Hi"}])
    jobs = [
        GenerationJob(prompt_ids=other, params=SamplingParams(max_new_tokens=24)),
        GenerationJob(
            prompt_ids=prompt, params=SamplingParams(max_new_tokens=24), constraint=constraint
        ),
    ]
    [want_other] = int4_engine.generate([jobs[0]])

    async def together() -> list:
        return await int4_engine.submit(jobs)

    got_other, got_bound = asyncio.run(together())
    assert got_bound.choices[0].text == text
    assert got_other.choices[0].token_ids == want_other.choices[0].token_ids


def test_the_setting_is_validated(tiny_model_dir):
    annotation = Settings.model_fields["CPU_QUANTIZATION"].annotation
    assert get_args(annotation) == CPU_QUANTIZATION_SETTINGS
    assert Settings.model_fields["CPU_QUANTIZATION"].default == "auto"
    # auto: int4 for the embedded model only; any other model stays as loaded
    assert resolve_cpu_quantization("auto", embedded=True) == "int4"
    assert resolve_cpu_quantization("auto", embedded=False) == "none"
    assert resolve_cpu_quantization("int8", embedded=True) == "int8"
    assert load_model(str(tiny_model_dir), cpu_quantization="auto").quantization == "none"
    with pytest.raises(ValidationError, match="CPU_QUANTIZATION"):
        Settings(CPU_QUANTIZATION="int3")
    assert Settings.model_fields["CPU_DENSE_PREFILL"].default is True
    with pytest.raises(ValidationError, match="CPU_DENSE_PREFILL"):
        Settings(CPU_DENSE_PREFILL="sometimes")
    with pytest.raises(ModelLoadError, match="unknown CPU_QUANTIZATION 'fp16'"):
        load_model(str(tiny_model_dir), cpu_quantization="fp16")
    with pytest.raises(ValueError, match="unknown CPU quantization"):
        quantize_model(nn.Sequential(), "int2")


def test_none_and_models_off_the_cpu_stay_as_loaded(tiny):
    model = copy.deepcopy(tiny.model)
    assert quantize_on_cpu(model, "none") == "none"
    assert quantize_model(model, "none").layers == {}
    on_meta = copy.deepcopy(tiny.model).to("meta")  # any device but the CPU
    assert quantize_on_cpu(on_meta, "int4") == "none"
    for m in (model, on_meta):
        assert not any(isinstance(x, (QuantizedLinear, FusedLlamaLayer)) for x in m.modules())
