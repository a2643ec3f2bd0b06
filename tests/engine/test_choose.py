"""The batched token chooser: every row of a decoding step picks what it would pick alone, with
the same log-probabilities (up to float rounding), whatever rules the other rows follow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.wordlist import WordlistRegistry, wordlist_compiler
from wordlist_generation.engine.choose import TokenChooser
from wordlist_generation.engine.params import GenerationJob, SamplingParams
from wordlist_generation.engine.rows import RowState
from wordlist_generation.settings import REPO_ROOT

PROMPT = [1, 2, 3, 4]


@dataclass
class Seq:
    row: RowState
    prompt_len: int
    constraint: Any
    ids: list[int]
    last: int = 0


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def constraint(tokenizer):
    compiler = wordlist_compiler(tokenizer, WordlistRegistry(REPO_ROOT / "wordlists"))
    return compiler.compile(WordlistSpec("en", 300)).constraint


#: One row of each kind a step can mix: (sampling params, constrained?, cancelled?). Rows report
#: their log-probabilities (`scores`), but for the last two kinds.
KINDS = {
    "greedy": (SamplingParams(max_new_tokens=8, scores=True), False, False),
    "greedy constrained": (SamplingParams(max_new_tokens=8, scores=True), True, False),
    "seeded sample": (
        SamplingParams(max_new_tokens=8, do_sample=True, seed=3, scores=True),
        False,
        False,
    ),
    "sample constrained, logprobs": (
        SamplingParams(max_new_tokens=8, do_sample=True, seed=5, temperature=0.7, logprobs=2),
        True,
        False,
    ),
    "penalised": (
        SamplingParams(max_new_tokens=8, repetition_penalty=1.5, scores=True),
        False,
        False,
    ),
    "penalised constrained": (
        SamplingParams(max_new_tokens=8, frequency_penalty=1.0, logprobs=0),
        True,
        False,
    ),
    "unscored constrained": (SamplingParams(max_new_tokens=8), True, False),
    "cancelled": (SamplingParams(max_new_tokens=8), False, True),
}


def new_seq(kind: str, constraint: Any) -> Seq:
    params, constrained, cancelled = KINDS[kind]
    job = GenerationJob(
        prompt_ids=PROMPT, params=params, constraint=constraint if constrained else None
    )
    if cancelled:
        job.cancel.set()
    generator = None
    if params.do_sample:
        generator = torch.Generator().manual_seed(params.seed)
    return Seq(
        row=RowState(job=job, choice=0, generator=generator),
        prompt_len=len(PROMPT),
        constraint=constraint.start() if constrained else None,
        ids=list(PROMPT),
    )


def same_entries(a: list | None, b: list | None) -> bool:
    """Token log-probability entries equal up to float rounding: a normalizer summed over a
    batch may round in another order than over one row."""
    if a is None or b is None:
        return a is b
    close = lambda x, y: math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-5)  # noqa: E731
    return len(a) == len(b) and all(
        x.id == y.id
        and close(x.logprob, y.logprob)
        and close(x.raw_logprob, y.raw_logprob)
        and [t for t, _ in x.top] == [t for t, _ in y.top]
        and all(close(p, q) for (_, p), (_, q) in zip(x.top, y.top, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def test_a_mixed_batch_picks_what_each_row_picks_alone(tokenizer, constraint):
    chooser = TokenChooser(tokenizer.decode, {tokenizer.eos_token_id})
    vocab = len(tokenizer)
    torch.manual_seed(0)
    steps = [torch.randn(len(KINDS), vocab) * 4 for _ in range(6)]
    together = [new_seq(kind, constraint) for kind in KINDS]
    apart = [new_seq(kind, constraint) for kind in KINDS]
    for logits in steps:
        running = [i for i, s in enumerate(together) if not s.row.done]
        assert running == [i for i, s in enumerate(apart) if not s.row.done]
        chooser.choose([together[i] for i in running], logits[running].clone())
        for i in running:
            chooser.choose([apart[i]], logits[i : i + 1].clone())
    for kind, a, b in zip(KINDS, together, apart, strict=True):
        assert a.row.tokens == b.row.tokens, kind
        assert a.row.finish_reason == b.row.finish_reason, kind
        assert math.isclose(a.row.logprob_sum, b.row.logprob_sum, rel_tol=1e-6), kind
        assert math.isclose(a.row.raw_logprob_sum, b.row.raw_logprob_sum, rel_tol=1e-6), kind
        assert same_entries(a.row.token_logprobs, b.row.token_logprobs), kind
    by_kind = dict(zip(KINDS, together, strict=True))
    assert by_kind["cancelled"].row.finish_reason == "cancelled"
    # Without `scores` or `logprobs`, no normalizer is computed and no score reported.
    for kind, seq in by_kind.items():
        params = KINDS[kind][0]
        reported = params.scores or params.logprobs is not None
        assert (seq.row.output().score is not None) == reported, kind
        assert (seq.row.output().raw_score is not None) == reported, kind
    assert by_kind["cancelled"].row.tokens == []
    for kind, seq in by_kind.items():
        if KINDS[kind][1]:
            done = seq.row.text[: constraint.releasable(seq.row.text)]  # whole words only
            report = constraint.check(done)
            assert report.ok, (kind, seq.row.text, report.violations)
            assert seq.row.tokens, kind


def test_raw_logprobs_are_the_models_own(tokenizer, constraint):
    """A mask adds nothing to the tokens it allows, so a constrained row's raw log-probability
    is the model's own; penalties do change the chosen token's score, and the raw figure still
    ignores them."""
    chooser = TokenChooser(tokenizer.decode, {tokenizer.eos_token_id})
    torch.manual_seed(1)
    seqs = [
        new_seq("greedy", constraint),
        new_seq("greedy constrained", constraint),
        new_seq("penalised", constraint),
    ]
    first = torch.randn(3, len(tokenizer)) * 4
    chooser.choose(seqs, first.clone())
    # The second step favours each row's first token again: the penalised row repeats it, so
    # its repetition penalty lowers the very score it picks.
    second = torch.randn(3, len(tokenizer)) * 4
    for i, seq in enumerate(seqs):
        second[i, seq.row.tokens[0]] += 40
    chooser.choose(seqs, second.clone())
    for i, seq in enumerate(seqs):
        a, b = seq.row.tokens
        model = float(first.log_softmax(-1)[i, a] + second.log_softmax(-1)[i, b])
        assert math.isclose(seq.row.raw_logprob_sum, model, abs_tol=1e-4), i
    penalised = seqs[2].row
    assert penalised.tokens[0] == penalised.tokens[1]
    assert penalised.logprob_sum != penalised.raw_logprob_sum
    # The constrained row's decoded distribution is renormalised over what the mask allows.
    assert seqs[1].row.logprob_sum > seqs[1].row.raw_logprob_sum
