"""One output row's text, as any engine produces it token by token.

Shared by every engine (transformers, a fake in tests, a remote pool): the token ids become text,
stop strings end the row (and are never streamed: text that could still become a stop string is
held back), `max_tokens`, cancellation and end-of-turn tokens end it, a constraint trims a cut
answer to its last whole word and holds back an unfinished word while streaming.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from .params import ChoiceOutput, GenerationJob, GenerationOutput, TokenLogprob

log = logging.getLogger(__name__)

END_TOKEN_STRINGS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def complete_text(text: str, end: int | None = None) -> int:
    """Where `text[:end]` ends once a trailing incomplete UTF-8 sequence is left out.

    Decoding the tokens of a character that is not finished yet (an emoji spread over several
    byte tokens) gives U+FFFD in its place: while streaming it may still complete; at the end of
    an answer (cut by `max_tokens`, say) it never will, and is dropped rather than returned.
    """
    keep = len(text) if end is None else end
    while keep > 0 and text[keep - 1] == "\ufffd":
        keep -= 1
    return keep


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the prefix of `text` that can never become part of a stop string."""
    keep = len(text)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                keep = min(keep, len(text) - k)
                break
    return complete_text(text, keep)


def listed_tokens(
    tokens: Sequence[int], text_len: int, decode: Callable[[Sequence[int]], str]
) -> int:
    """How many leading `tokens` have text starting inside the first `text_len` characters of
    their decoded text: the tokens a finished answer of that length lists with its logprobs.

    A token's text starts where the complete characters of everything before it end, which never
    decreases along the tokens, so a binary search over prefixes finds the count.
    """
    lo, hi = 0, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if complete_text(decode(tokens[:mid])) < text_len:
            lo = mid + 1
        else:
            hi = mid
    return lo


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def end_token_ids(tokenizer: Any, configured: int | Sequence[int] | None = None) -> frozenset[int]:
    """Every id that ends a turn: the model's configured EOS, the tokenizer's, and the usual
    end-of-turn tokens of chat templates that the vocabulary has."""
    ids: set[int] = set()
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[s] for s in END_TOKEN_STRINGS if s in vocab)
    return frozenset(ids)


@dataclass
class RowState:
    """One output sequence being generated (a choice of a job; not a beam)."""

    job: GenerationJob
    choice: int
    generator: Any = None  # a torch.Generator when sampling
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    done: bool = False
    finish_reason: str = "length"
    logprob_sum: float = 0.0
    #: Sum of the chosen tokens' log-probabilities before penalties and the constraint mask.
    raw_logprob_sum: float = 0.0
    #: Whether the sums above are kept (`add_logprobs` was called): else no score is reported.
    scored: bool = False
    error: str | None = None
    #: With `params.logprobs` set: every recorded token's entry, and where each pushed token's
    #: text starts (characters of complete text before it); entries streamed so far.
    token_logprobs: list[TokenLogprob] | None = None
    starts: list[int] = field(default_factory=list)
    streamed_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.job.params.logprobs is not None:
            self.token_logprobs = []

    def record(self, entry: TokenLogprob) -> None:
        """Keep the log-probabilities of the token about to be pushed."""
        assert self.token_logprobs is not None
        self.token_logprobs.append(entry)

    def add_logprobs(self, decoded: float, raw: float) -> None:
        """Record the chosen token's log-probability as decoded and under the model alone."""
        self.scored = True
        if math.isfinite(decoded):
            self.logprob_sum += decoded
        if math.isfinite(raw):
            self.raw_logprob_sum += raw

    def push(
        self,
        token: int,
        decode: Callable[[Sequence[int]], str],
        eos_token_ids: Collection[int],
        error: str | None = None,
    ) -> None:
        """Take one generated token: end the row or stream what can be released."""
        if self.token_logprobs is not None:
            self.starts.append(complete_text(self.text))
        self.tokens.append(token)
        job, params = self.job, self.job.params
        if error is not None:
            self.error = error
            self.finish("error")
            return
        if token in eos_token_ids:
            self.finish("stop", ended_by_eos=True)
            return
        self.text = decode(self.tokens)
        cut = find_stop(self.text, params.stop)
        if cut is not None:
            self.text = self.text[:cut]
            self.finish("stop")
            return
        if job.cancel.is_set():
            self.finish("cancelled")
            return
        if len(self.tokens) >= params.max_new_tokens:
            self.finish("length")
            return
        if job.on_delta is not None:
            keep = stop_holdback(self.text, params.stop)
            if job.constraint is not None:
                keep = min(keep, job.constraint.releasable(self.text[:keep]))
            if keep > self.sent:
                if self.token_logprobs is not None:
                    self._stream_logprobs(self._ready_logprobs(keep))
                job.on_delta(self.choice, self.text[self.sent : keep])
                self.sent = keep

    def _ready_logprobs(self, upto: int) -> int:
        """How many entries have text ending within the first `upto` characters. A token ends
        where the next token with a later start begins (the tokens of one character, and tokens
        with no text, end together), the last ones where the complete text ends."""
        if self.token_logprobs is None or self.job.on_logprobs is None:
            return self.streamed_logprobs
        starts = self.starts
        n = min(len(self.token_logprobs), len(starts))
        complete = complete_text(self.text)
        i = self.streamed_logprobs
        while i < n:
            j = i + 1
            while j < len(starts) and starts[j] == starts[i]:
                j += 1
            end = starts[j] if j < len(starts) else complete
            if end <= starts[i] or end > upto:
                break
            i = min(j, n)
        return i

    def _stream_logprobs(self, upto: int) -> None:
        """Hand the entries before index `upto` not yet streamed to `on_logprobs`."""
        if self.token_logprobs is None or self.job.on_logprobs is None:
            return
        if upto > self.streamed_logprobs:
            self.job.on_logprobs(self.choice, self.token_logprobs[self.streamed_logprobs : upto])
            self.streamed_logprobs = upto

    def listed(self) -> int:
        """Entries of the tokens whose text starts inside `text` (see `ChoiceOutput`)."""
        assert self.token_logprobs is not None
        n = min(len(self.token_logprobs), len(self.starts))
        end = len(self.text)
        return sum(1 for s in self.starts[:n] if s < end)

    def finish(self, reason: str, *, ended_by_eos: bool = False) -> None:
        """End the row. `text` holds no end token (never decoded into it) and no stop string."""
        self.done = True
        self.finish_reason = reason
        released = self.text[: self.sent]
        self.text = self.text[: complete_text(self.text)]
        if self.job.constraint is not None:
            self.text = self.job.constraint.finalize(self.text, complete=ended_by_eos)
        if self.job.on_delta is not None and not self.job.cancel.is_set():
            if not self.text.startswith(released):
                log.warning(
                    "final text of choice %d no longer starts with what was streamed", self.choice
                )
            elif len(self.text) > self.sent:
                if self.token_logprobs is not None:
                    self._stream_logprobs(self.listed())
                self.job.on_delta(self.choice, self.text[self.sent :])
            if self.token_logprobs is not None:  # a last token whose text was cut: no delta
                self._stream_logprobs(self.listed())
            self.sent = len(self.text)

    def output(self) -> ChoiceOutput:
        return ChoiceOutput(
            index=self.choice,
            text=self.text,
            token_ids=self.tokens,
            finish_reason=self.finish_reason,
            error=self.error,
            score=self.logprob_sum / max(1, len(self.tokens)) if self.scored else None,
            raw_score=self.raw_logprob_sum / max(1, len(self.tokens)) if self.scored else None,
            token_logprobs=(
                self.token_logprobs[: self.listed()] if self.token_logprobs is not None else None
            ),
        )


def finished_sequence(
    job: GenerationJob,
    index: int,
    generated: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    eos_token_ids: Collection[int],
    *,
    score: float | None = None,
    error: str | None = None,
    token_logprobs: Sequence[TokenLogprob] | None = None,
) -> ChoiceOutput:
    """A whole sequence known only at the end (a beam): the same stop, cancel and trimming rules
    as `RowState`, applied once. `error` is a constraint failure of this sequence;
    `token_logprobs` the entries of its tokens, of which those of the returned text are kept."""
    tokens: list[int] = []
    ended = False
    for t in generated:
        tokens.append(t)
        if t in eos_token_ids:
            ended = True
            break
    text = decode(tokens[:-1] if ended else tokens)
    reason = "stop" if ended else "length"
    cut = find_stop(text, job.params.stop)
    if cut is not None:
        text, reason, ended = text[:cut], "stop", False
    if job.cancel.is_set():
        reason = "cancelled"
    if error is not None:
        reason, ended = "error", False
    text = text[: complete_text(text)]
    if job.constraint is not None:
        text = job.constraint.finalize(text, complete=ended)
    listed = None
    if token_logprobs is not None:
        entries = list(token_logprobs[: len(tokens)])
        listed = entries[: listed_tokens(tokens[: len(entries)], len(text), decode)]
    return ChoiceOutput(
        index=index,
        text=text,
        token_ids=tokens,
        finish_reason=reason,
        error=error,
        score=score,
        token_logprobs=listed,
    )


def job_output(job: GenerationJob, choices: list[ChoiceOutput]) -> GenerationOutput:
    return GenerationOutput(
        choices=choices,
        prompt_tokens=len(job.prompt_ids),
        completion_tokens=sum(len(c.token_ids) for c in choices),
        seconds=0.0,
        cancelled=job.cancel.is_set(),
    )
