"""The transformers engine on a tiny random model: constraint failures are reported in every
decoding mode, beam search included."""

from __future__ import annotations

import pytest
import torch
from fakes import TextConstraint

from wordlist_generation.constraints.base import SequenceConstraint
from wordlist_generation.engine.hf import HFEngine
from wordlist_generation.engine.loader import load_model
from wordlist_generation.engine.params import GenerationJob, SamplingParams


class _OneTokenThenNothing(SequenceConstraint):
    """Allows one token, then nothing at all and no end: a dead end on the second step."""

    def __init__(self, token: int, used: bool = False) -> None:
        self.token = token
        self.used = used

    def fork(self) -> _OneTokenThenNothing:
        return _OneTokenThenNothing(self.token, self.used)

    def advance(self, token_id: int) -> bool:
        if self.used or token_id != self.token:
            return False
        self.used = True
        return True

    def fill_allowed(self, allowed: torch.Tensor) -> None:
        if not self.used:
            allowed[self.token] = True

    def can_end(self) -> bool:
        return False


class DeadEnd(TextConstraint):
    def __init__(self, token: int) -> None:
        self.token = token

    def start(self) -> SequenceConstraint:
        return _OneTokenThenNothing(self.token)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    e = HFEngine(load_model(str(tiny_model_dir)), torch_threads=1)
    yield e
    e.close()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=6, num_beams=3, n=2),
        SamplingParams(max_new_tokens=6),
        SamplingParams(max_new_tokens=6, do_sample=True, temperature=0.8, seed=3),
    ],
    ids=["beam", "greedy", "sample"],
)
def test_a_dead_end_is_an_error_in_every_mode(engine, params):
    token = engine.tokenizer.encode("Hello", add_special_tokens=False)[0]
    prompt = engine.encode_chat([{"role": "user", "content": "Say hello"}])
    job = GenerationJob(prompt_ids=prompt, params=params, constraint=DeadEnd(token))
    [out] = engine.generate([job])
    assert len(out.choices) == params.n
    for choice in out.choices:
        assert choice.finish_reason == "error", choice
        assert choice.error and "dead end" in choice.error
        assert choice.token_ids[0] == token
