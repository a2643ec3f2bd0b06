"""Stop handling, limits and streaming of one row (`engine.rows`), shared by every engine."""

from __future__ import annotations

import pytest

from wordlist_generation.engine.params import GenerationJob, SamplingParams
from wordlist_generation.engine.rows import (
    RowState,
    find_stop,
    finished_sequence,
    stop_holdback,
)

EOS = 0


class CharTokens:
    """Token t (>= 1) is the character chr(t): decoding is exact, one character per token."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    @staticmethod
    def decode(tokens) -> str:
        return "".join(chr(t) for t in tokens if t != EOS)


def run(text: str, *, stop=(), max_tokens=100, eos=True, cancel_after=None):
    deltas: list[str] = []
    job = GenerationJob(
        prompt_ids=[1],
        params=SamplingParams(max_new_tokens=max_tokens, stop=tuple(stop)),
        on_delta=lambda i, d: deltas.append(d),
    )
    row = RowState(job=job, choice=0)
    tokens = CharTokens.encode(text) + ([EOS] if eos else [])
    for i, token in enumerate(tokens):
        if cancel_after is not None and i == cancel_after:
            job.cancel.set()
        row.push(token, CharTokens.decode, {EOS})
        if row.done:
            break
    if not row.done:
        row.finish("length")
    return row, deltas


def test_stop_string_split_over_tokens_never_leaks():
    row, deltas = run("Hello END world", stop=["END"])
    assert row.text == "Hello "
    assert row.finish_reason == "stop"
    assert "".join(deltas) == "Hello "
    assert all("E" not in d for d in deltas)


def test_earliest_of_several_stops_wins():
    row, _ = run("one two three", stop=["three", "two"])
    assert row.text == "one "


def test_text_that_could_still_become_a_stop_is_held_back():
    assert stop_holdback("abc EN", ["END"]) == len("abc ")
    assert stop_holdback("abc E", ["END"]) == len("abc ")
    assert stop_holdback("abc", ["END"]) == 3
    assert stop_holdback("ab\ufffd", []) == 2  # an incomplete UTF-8 sequence is never streamed
    assert find_stop("xx END yy", ["END", "yy"]) == 3
    assert find_stop("nothing", ["END"]) is None


def test_a_stop_prefix_that_does_not_complete_is_released_at_the_end():
    row, deltas = run("say EN", stop=["END"])
    assert row.finish_reason == "stop"  # ended by EOS
    assert row.text == "say EN"
    assert "".join(deltas) == "say EN"


def test_max_tokens_ends_the_row_with_length():
    row, deltas = run("abcdefgh", max_tokens=3, eos=False)
    assert row.finish_reason == "length"
    assert row.text == "abc"
    assert len(row.tokens) == 3
    assert "".join(deltas) == "abc"


def test_cancel_ends_the_row_within_a_token():
    row, _ = run("abcdefgh", cancel_after=2)
    assert row.finish_reason == "cancelled"
    assert len(row.tokens) == 3


def test_a_constraint_error_ends_the_row_with_its_cause():
    job = GenerationJob(prompt_ids=[1], params=SamplingParams(max_new_tokens=10))
    row = RowState(job=job, choice=0)
    row.push(ord("a"), CharTokens.decode, {EOS})
    row.push(EOS, CharTokens.decode, {EOS}, error="dead end: no token can continue")
    assert row.done and row.finish_reason == "error"
    assert row.error == "dead end: no token can continue"


@pytest.mark.parametrize(
    ("tokens", "reason", "text"),
    [
        ([ord("h"), ord("i"), EOS, EOS], "stop", "hi"),
        ([ord("h"), ord("i")], "length", "hi"),
        ([ord("h"), ord("X"), ord("y")], "stop", "h"),
    ],
)
def test_a_whole_sequence_follows_the_same_rules(tokens, reason, text):
    job = GenerationJob(prompt_ids=[1], params=SamplingParams(max_new_tokens=10, stop=("X",)))
    out = finished_sequence(job, 0, tokens, CharTokens.decode, {EOS})
    assert (out.finish_reason, out.text) == (reason, text)


def test_a_failed_sequence_reports_error_not_stop():
    job = GenerationJob(prompt_ids=[1], params=SamplingParams(max_new_tokens=10))
    out = finished_sequence(job, 0, [ord("a"), EOS], CharTokens.decode, {EOS}, error="dead end")
    assert out.finish_reason == "error" and out.error == "dead end"


class ByteTokens:
    """Token t (>= 1) is the byte t - 1: decoding a cut multi-byte character gives U+FFFD, as a
    byte-level tokenizer does."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return [b + 1 for b in text.encode()]

    @staticmethod
    def decode(tokens) -> str:
        return bytes(t - 1 for t in tokens if t != EOS).decode("utf-8", errors="replace")


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_inside_a_character_never_ends_in_a_replacement_character(stream):
    """`max_tokens` ends the row after the first byte of "é": the incomplete character is left
    out, never returned (or streamed) as U+FFFD."""
    tokens = ByteTokens.encode("ab é")
    deltas: list[str] = []
    job = GenerationJob(
        prompt_ids=[1],
        params=SamplingParams(max_new_tokens=4),
        on_delta=(lambda i, d: deltas.append(d)) if stream else None,
    )
    row = RowState(job=job, choice=0)
    for token in tokens:
        row.push(token, ByteTokens.decode, {EOS})
        if row.done:
            break
    assert row.finish_reason == "length"
    assert row.text == "ab "
    assert "".join(deltas) == ("ab " if stream else "")
    whole = finished_sequence(job, 0, tokens[:4], ByteTokens.decode, {EOS})
    assert whole.text == "ab "
