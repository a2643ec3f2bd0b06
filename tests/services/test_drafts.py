"""Draft selection: compliance first, then the soft score, then fluency (mean log-probability)."""

from __future__ import annotations

import pytest

from wordlist_generation.constraints.base import CheckReport, CompiledConstraint
from wordlist_generation.engine.params import ChoiceOutput, GenerationOutput, SamplingParams
from wordlist_generation.errors import InvalidRequest
from wordlist_generation.services.drafts import DEFAULT_DRAFTS, choose_drafts, select_drafts


class Soft(CompiledConstraint):
    """Soft score = number of 's' in the text; compliant unless the text contains 'r'."""

    has_soft_constraints = True

    def start(self):  # pragma: no cover - not decoded here
        raise NotImplementedError

    def releasable(self, text: str) -> int:
        return len(text)

    def finalize(self, text: str, complete: bool) -> str:
        return text

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
    return GenerationOutput(choices=choices, prompt_tokens=1, completion_tokens=len(choices), seconds=0)


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
    assert choose_drafts(Soft(), beams(1), None) == 1  # greedy has one candidate
    assert choose_drafts(Hard(), sample(), None) == 1
    assert choose_drafts(None, sample(), None) == 1


@pytest.mark.parametrize(
    ("constraint", "params", "asked"),
    [(Hard(), sample(), 2), (None, sample(), 3), (Soft(), beams(4, 2), 3)],
)
def test_impossible_drafts_are_400_naming_drafts(constraint, params, asked):
    with pytest.raises(InvalidRequest) as err:
        choose_drafts(constraint, params, asked)
    assert err.value.param == "drafts"
