"""The logits processor inside `model.generate` with a tiny random-weight model and the real
SmolLM2 tokenizer: greedy, sampling, beam search, batches with mixed constraints, logits wider
than the tokenizer, and the error paths. Every generated text is re-checked independently."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList
from wordcheck import violations

from wordlist_generation.constraints.base import SequenceConstraint
from wordlist_generation.constraints.bitmask import apply_bitmask
from wordlist_generation.constraints.compiler import ConstraintCompiler
from wordlist_generation.constraints.processor import ConstraintLogitsProcessor
from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.tokenizer import TokenizerTables
from wordlist_generation.constraints.wordlist.compile import WordlistHandler, wordlist_compiler
from wordlist_generation.constraints.wordlist.lists import WordlistRegistry, default_wordlist_dir

N = 1000


@pytest.fixture(scope="module")
def tok(smollm_tokenizer):
    return smollm_tokenizer


@pytest.fixture(scope="module")
def eos_ids(tok) -> list[int]:
    return sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")})


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    m = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))
    m.eval()
    return m


@pytest.fixture(scope="module")
def tables(tok) -> TokenizerTables:
    return TokenizerTables(tok)


@pytest.fixture(scope="module")
def compiler(tok, tables) -> ConstraintCompiler:
    c = wordlist_compiler(
        tok, WordlistRegistry(default_wordlist_dir()), tables=tables, background_warm=False
    )
    handler = c.handler(WordlistSpec)
    assert isinstance(handler, WordlistHandler)
    handler.warmup()
    return c


def _prompts(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt batch (pad = EOS), as the engine builds it."""
    enc = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), tok.eos_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e) :] = torch.tensor(e)
        mask[i, width - len(e) :] = 1
    return ids, mask


def _generate(model, tok, eos_ids, roots, prompts, num_beams=1, **kwargs):
    ids, mask = _prompts(tok, prompts)
    proc = ConstraintLogitsProcessor(
        roots, prompt_len=ids.shape[1], num_beams=num_beams, eos_token_ids=eos_ids
    )
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        logits_processor=LogitsProcessorList([proc]),
        eos_token_id=eos_ids,
        pad_token_id=tok.eos_token_id,
        num_beams=num_beams,
        **kwargs,
    )
    return proc, out[:, ids.shape[1] :].tolist()


def _verify(constraint, tok, eos_ids, gen: list[int], lang: str) -> str:
    """Decode, finalize and check one generated row independently of the masks."""
    ended = False
    tokens = []
    for t in gen:
        if t in eos_ids:
            ended = True
            break
        tokens.append(t)
    assert all(t < len(tok) for t in tokens)
    text = tok.decode(tokens)
    if ended:  # EOS is only allowed where the answer may end
        assert constraint.accepts(text), text
    final = constraint.finalize(text, complete=ended)
    assert constraint.check(final).ok, (text, final)
    assert violations(final, lang, N) == [], (text, final)
    return final


def test_greedy(model, tok, eos_ids, compiler) -> None:
    c = compiler.compile(WordlistSpec("es", N)).constraint
    proc, gens = _generate(
        model, tok, eos_ids, [c.start()], ["Escribe una frase:"], max_new_tokens=32, do_sample=False
    )
    assert proc.errors == {}
    final = _verify(c, tok, eos_ids, gens[0], "es")
    assert final


def test_sampling_with_top_k_several_sequences(model, tok, eos_ids, compiler) -> None:
    c = compiler.compile(WordlistSpec("es", N)).constraint
    torch.manual_seed(1)
    proc, gens = _generate(
        model,
        tok,
        eos_ids,
        [c.start() for _ in range(3)],
        ["Hola"],
        max_new_tokens=32,
        do_sample=True,
        top_k=20,
        num_return_sequences=3,
    )
    assert proc.errors == {}
    texts = [_verify(c, tok, eos_ids, g, "es") for g in gens]
    assert len(set(texts)) > 1


def test_beam_search(model, tok, eos_ids, compiler) -> None:
    c = compiler.compile(WordlistSpec("fr", N)).constraint
    proc, gens = _generate(
        model,
        tok,
        eos_ids,
        [c.start()],
        ["Bonjour"],
        num_beams=4,
        max_new_tokens=24,
        do_sample=False,
        num_return_sequences=2,
    )
    assert proc.errors == {}
    assert len(gens) == 2
    for g in gens:
        _verify(c, tok, eos_ids, g, "fr")


def test_batch_of_left_padded_prompts_with_mixed_constraints(model, tok, eos_ids, compiler):
    es = compiler.compile(WordlistSpec("es", N)).constraint
    en = compiler.compile(WordlistSpec("en", N)).constraint
    prompts = ["Una historia muy larga sobre el mar:", "Hi", "Libre"]
    proc, gens = _generate(
        model,
        tok,
        eos_ids,
        [es.start(), en.start(), None],
        prompts,
        max_new_tokens=24,
        do_sample=False,
    )
    assert proc.errors == {}
    _verify(es, tok, eos_ids, gens[0], "es")
    _verify(en, tok, eos_ids, gens[1], "en")
    # the unconstrained row is left alone: a random model writes outside any list
    free = tok.decode([t for t in gens[2] if t not in eos_ids])
    assert violations(free, "en", N)


def test_lm_format_enforcer_backend_in_generate(model, tok, eos_ids, tables) -> None:
    comp = wordlist_compiler(
        tok,
        WordlistRegistry(default_wordlist_dir()),
        backend="lm-format-enforcer",
        tables=tables,
        background_warm=False,
    )
    c = comp.compile(WordlistSpec("it", N)).constraint
    proc, gens = _generate(
        model,
        tok,
        eos_ids,
        [c.start(), c.start()],
        ["Ciao", "Scrivi"],
        num_beams=2,
        max_new_tokens=16,
        do_sample=False,
    )
    assert proc.errors == {}
    for g in gens:
        _verify(c, tok, eos_ids, g, "it")


def test_logits_wider_than_the_tokenizer(tok, eos_ids, compiler) -> None:
    config = LlamaConfig(
        vocab_size=len(tok) + 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    wide = LlamaForCausalLM(config)
    with torch.no_grad():  # make the padding columns the most likely ones
        wide.lm_head.weight[len(tok) :] = wide.lm_head.weight[:64].abs() * 50
    c = compiler.compile(WordlistSpec("es", N)).constraint
    proc, gens = _generate(
        wide, tok, eos_ids, [c.start()], ["Hola"], max_new_tokens=12, do_sample=False
    )
    assert proc.errors == {}
    _verify(c, tok, eos_ids, gens[0], "es")


# ------------------------------------------------------------------------------ direct calls


def _call(proc, prompt_len: int, rows: list[list[int]], vocab: int) -> torch.Tensor:
    ids = torch.tensor([[5] * prompt_len + r for r in rows], dtype=torch.long)
    scores = torch.zeros((len(rows), vocab))
    return proc(ids, scores)


def test_rows_are_found_by_prefix_when_beams_reorder(tok, eos_ids, compiler, tables) -> None:
    c = compiler.compile(WordlistSpec("es", N)).constraint
    v = tables.vocab_size
    proc = ConstraintLogitsProcessor([c.start()], prompt_len=2, num_beams=3, eos_token_ids=eos_ids)
    x = tok.encode("Hola, qué tal", add_special_tokens=False)
    y = tok.encode("Qué bien, sí", add_special_tokens=False)
    for step in range(min(len(x), len(y)) + 1):
        rows = [x[:step], y[:step], x[:step]]  # two beams share a prefix, then beams swap
        if step % 2:
            rows.reverse()
        out = _call(proc, 2, rows, v)
        for r, prefix in enumerate(rows):
            fresh = c.start()
            for t in prefix:
                assert fresh.advance(t)
            allowed = torch.zeros(v, dtype=torch.bool)
            fresh.fill_allowed(allowed)
            for e in eos_ids:
                allowed[e] = fresh.can_end()
            assert torch.equal(torch.isfinite(out[r]), allowed), (step, r, prefix)
    assert proc.errors == {}


def test_rejected_token_is_reported_and_only_eos_is_allowed(tok, eos_ids, compiler, tables):
    c = compiler.compile(WordlistSpec("es", N)).constraint
    v = tables.vocab_size
    proc = ConstraintLogitsProcessor(
        [c.start(), c.start()], prompt_len=1, num_beams=1, eos_token_ids=eos_ids
    )
    _call(proc, 1, [[], []], v)
    bad = tok.encode("123", add_special_tokens=False)[0]
    good = tok.encode("Hola", add_special_tokens=False)[0]
    out = _call(proc, 1, [[bad], [good]], v)
    assert list(proc.errors) == [0] and "not allowed" in proc.errors[0]
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == eos_ids
    assert torch.isfinite(out[1]).sum() > 10


class _DeadEnd(SequenceConstraint):
    def fork(self) -> SequenceConstraint:
        return self

    def advance(self, token_id: int) -> bool:
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        pass

    def can_end(self) -> bool:
        return False


def test_dead_end_is_reported_not_silently_ended(eos_ids) -> None:
    proc = ConstraintLogitsProcessor([_DeadEnd()], prompt_len=1, num_beams=1, eos_token_ids=eos_ids)
    out = _call(proc, 1, [[]], 100)
    assert "dead end" in proc.errors[0]
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [e for e in eos_ids if e < 100]


def test_finished_and_unconstrained_rows_are_untouched(tok, eos_ids, compiler, tables) -> None:
    c = compiler.compile(WordlistSpec("es", N)).constraint
    v = tables.vocab_size
    proc = ConstraintLogitsProcessor(
        [c.start(), None, c.start()], prompt_len=1, num_beams=1, eos_token_ids=eos_ids
    )
    _call(proc, 1, [[], [], []], v)
    hola = tok.encode("Hola", add_special_tokens=False)[0]
    out = _call(proc, 1, [[hola], [7], [eos_ids[-1]]], v)
    assert torch.isfinite(out[1]).all() and torch.isfinite(out[2]).all()
    assert not torch.isfinite(out[0]).all()
    assert proc.errors == {}


def test_apply_bitmask_matches_a_plain_mask() -> None:
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (3, 4), dtype=torch.int32, generator=g)
    scores = torch.randn((3, 140), generator=g)
    expected = scores.clone()
    for r in range(3):
        for t in range(140):
            word, bit = divmod(t, 32)
            if t >= 128 or not (int(bits[r, word]) >> bit) & 1:
                expected[r, t] = float("-inf")
    for dtype in (torch.float32, torch.bfloat16):
        got = scores.clone().to(dtype)
        apply_bitmask(got, bits)
        assert torch.equal(got, expected.to(dtype))
