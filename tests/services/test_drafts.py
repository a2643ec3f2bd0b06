"""Draft selection: compliance first, then the soft score, then fluency (the unmasked mean
log-probability less a repetition penalty)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import TextConstraint

from wordlist_generation.constraints.base import CheckReport
from wordlist_generation.engine.params import ChoiceOutput, GenerationOutput, SamplingParams
from wordlist_generation.errors import InvalidRequest
from wordlist_generation.services.drafts import (
    DEFAULT_DRAFTS,
    REPEAT_WEIGHT,
    choose_drafts,
    draft_params,
    repeated_trigrams,
    select_drafts,
)


class Soft(TextConstraint):
    """Soft score = number of 's' in the text; compliant unless the text contains 'r'."""

    has_soft_constraints = True

    def check(self, text: str) -> CheckReport:
        return CheckReport(ok="r" not in text, violations=["r"] if "r" in text else [])

    def soft_score(self, text: str) -> float:
        return float(text.count("s"))


class Hard(Soft):
    has_soft_constraints = False


def output(*texts_and_scores: tuple[str, float]) -> GenerationOutput:
    choices = [
        ChoiceOutput(index=i, text=t, token_ids=[1], finish_reason="stop", score=s)
        for i, (t, s) in enumerate(texts_and_scores)
    ]
    return GenerationOutput(
        choices=choices, prompt_tokens=1, completion_tokens=len(choices), seconds=0
    )


def test_compliance_beats_soft_score_and_soft_score_beats_fluency():
    c = Soft()
    out = output(("sssr", -0.1), ("ss", -2.0), ("s", -0.5), ("ss", -1.0))
    checks = [c.check(ch.text) for ch in out.choices]
    kept, kept_checks, drafts = select_drafts(c, 2, out, checks)
    assert [ch.text for ch in kept.choices] == ["ss", "ss"]
    assert [ch.score for ch in kept.choices] == [-1.0, -2.0]  # fluency breaks the tie
    assert [ch.index for ch in kept.choices] == [0, 1]  # renumbered for the response
    assert all(r.ok for r in kept_checks)
    assert [d["selected"] for d in drafts] == [False, True, False, True]
    assert drafts[0]["compliant"] is False and drafts[0]["soft_score"] == 3


def test_a_non_compliant_draft_is_kept_only_when_nothing_else_is_left():
    c = Soft()
    out = output(("rr", -0.1), ("r", -0.2))
    kept, checks, _ = select_drafts(c, 1, out, [c.check(ch.text) for ch in out.choices])
    assert [ch.text for ch in kept.choices] == ["rr"]
    assert checks[0].ok is False


def sample(n=1) -> SamplingParams:
    return SamplingParams(max_new_tokens=8, do_sample=True, n=n)


def beams(num_beams: int, n: int = 1) -> SamplingParams:
    return SamplingParams(max_new_tokens=8, num_beams=num_beams, n=n)


def test_how_many_drafts():
    assert choose_drafts(Soft(), sample(), None) == DEFAULT_DRAFTS
    assert choose_drafts(Soft(), sample(), 5) == 5
    assert choose_drafts(Soft(), beams(10, 2), None) == DEFAULT_DRAFTS
    assert choose_drafts(Soft(), beams(4, 2), None) == 2
    assert choose_drafts(Soft(), beams(1), None) == 1  # greedy: one unless asked
    assert choose_drafts(Soft(), beams(1), 3) == 3  # ... then the others are sampled
    assert choose_drafts(Hard(), sample(), None) == 1
    assert choose_drafts(Hard(), sample(), 2) == 2  # word lists rank drafts by fluency
    assert choose_drafts(Hard(), beams(1), 4) == 4
    assert choose_drafts(None, sample(), None) == 1
    assert choose_drafts(None, sample(), 1) == 1


@pytest.mark.parametrize(
    ("constraint", "params", "asked"),
    [(None, sample(), 3), (Soft(), beams(4, 2), 3), (Hard(), sample(), 9), (Hard(), beams(1), 9)],
)
def test_impossible_drafts_are_400_naming_drafts(constraint, params, asked):
    with pytest.raises(InvalidRequest) as err:
        choose_drafts(constraint, params, asked, max_drafts=8)
    assert err.value.param == "drafts"


def test_greedy_drafts_keep_the_greedy_answer_and_sample_the_rest():
    greedy = SamplingParams(max_new_tokens=8)
    params = draft_params(greedy, 3, 0.7)
    assert (params.n, params.do_sample, params.temperature, params.seed) == (3, True, 0.7, 0)
    assert [params.samples(c) for c in range(3)] == [False, True, True]
    assert draft_params(replace(greedy, seed=5), 3, 0.7).seed == 5  # the request's own seed
    assert draft_params(sample(2), 3, 0.7) == replace(sample(2), n=6, scores=True)  # as asked
    assert params.scores  # drafts are ranked by their scores: the engine must compute them
    assert draft_params(greedy, 1, 0.7) is greedy


def test_fluency_uses_the_unmasked_logprob_and_penalises_loops():
    c = Hard()
    loop = "el perro y el perro y el perro y el perro"
    fluent = "el perro come pan en la casa de mi madre"
    out = GenerationOutput(
        choices=[
            ChoiceOutput(0, loop, [1], "stop", score=-0.2, raw_score=-0.5),
            ChoiceOutput(1, fluent, [1], "stop", score=-0.1, raw_score=-1.2),
        ],
        prompt_tokens=1,
        completion_tokens=2,
        seconds=0,
    )
    assert repeated_trigrams(fluent) == 0.0
    assert repeated_trigrams(loop) == pytest.approx(6 / 9)
    kept, _, drafts = select_drafts(c, 1, out, [c.check(ch.text) for ch in out.choices])
    assert kept.choices[0].text == fluent  # -1.2 beats -0.5 - 2 x 6/9
    assert drafts[0]["fluency"] == pytest.approx(-0.5 - REPEAT_WEIGHT * 6 / 9, abs=1e-4)
    assert drafts[1]["mean_logprob_unconstrained"] == -1.2
    assert "soft_score" not in drafts[0]  # no soft constraints, no soft score


def test_a_loop_never_beats_an_answer_that_does_not_loop():
    """A loop is the most predictable text there is: its mean log-probability is near 0."""
    c = Hard()
    loop = "Un perro. No, no, no, no, no, no, no, no, no, no, no, no, no, no"
    clumsy = "El cielo de mi tiempo está en la ciudad desde el año"
    out = GenerationOutput(
        choices=[
            ChoiceOutput(0, loop, [1], "length", score=-0.05, raw_score=-0.05),
            ChoiceOutput(1, clumsy, [1], "stop", score=-2.5, raw_score=-3.0),
        ],
        prompt_tokens=1,
        completion_tokens=2,
        seconds=0,
    )
    kept, _, _ = select_drafts(c, 1, out, [c.check(ch.text) for ch in out.choices])
    assert kept.choices[0].text == clumsy
