"""Penalties (`engine.sampling.apply_penalties`): OpenAI's additive presence/frequency penalties
over generated tokens, the multiplicative repetition penalty over prompt and output."""

from __future__ import annotations

import torch

from wordlist_generation.engine.params import SamplingParams
from wordlist_generation.engine.sampling import apply_penalties, needs_penalties, row_seed


def params(**kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=8, **kw)


def test_frequency_and_presence_count_generated_tokens_only():
    scores = torch.zeros(6)
    ids = torch.tensor([1, 1, 2, 3, 3, 3])  # prompt [1, 1], generated [2, 3, 3, 3]
    apply_penalties(scores, ids, 2, params(frequency_penalty=0.5, presence_penalty=1.0))
    assert scores.tolist() == [0.0, 0.0, -1.5, -2.5, 0.0, 0.0]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    scores = torch.tensor([2.0, -2.0, 2.0, 4.0])
    ids = torch.tensor([0, 1])  # both in the prompt: the repetition penalty sees prompt and output
    apply_penalties(scores, ids, 2, params(repetition_penalty=2.0))
    assert scores.tolist() == [1.0, -4.0, 2.0, 4.0]


def test_no_penalty_changes_nothing():
    scores = torch.tensor([0.5, -0.5, 1.5])
    apply_penalties(scores, torch.tensor([0, 1, 2]), 1, params())
    assert scores.tolist() == [0.5, -0.5, 1.5]
    assert not needs_penalties([params()])
    assert needs_penalties([params(), params(presence_penalty=0.1)])


def test_row_seeds_are_reproducible_and_differ_per_choice():
    assert row_seed(7, 0) == row_seed(7, 0)
    assert row_seed(7, 0) != row_seed(7, 1)
    assert row_seed(None, 0) != row_seed(None, 0)


def test_no_repeat_ngram_bans_the_token_that_would_repeat_a_trigram() -> None:
    from wordlist_generation.engine.sampling import (
        NGRAM_BAN,
        apply_penalties,
        repeated_ngram_tokens,
    )

    assert repeated_ngram_tokens([1, 2, 3, 4, 1, 2], 3) == [3]
    assert repeated_ngram_tokens([1, 2, 3, 1, 2, 5, 1, 2], 3) == [3, 5]
    assert repeated_ngram_tokens([1, 2], 3) == []
    assert sorted(repeated_ngram_tokens([4, 4, 7], 1)) == [4, 7]
    params = SamplingParams(max_new_tokens=8, no_repeat_ngram_size=3)
    scores = torch.zeros(10)
    ids = torch.tensor([9, 9, 1, 2, 3, 1, 2])  # two prompt tokens: never part of an n-gram
    apply_penalties(scores, ids, 2, params)
    assert scores[3] == -NGRAM_BAN and scores[[0, 1, 2, 4]].eq(0).all()
