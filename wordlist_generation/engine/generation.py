"""Batched generation on top of transformers' `generate`, with our own per-row logic.

transformers gives us the decoding loop, KV cache, left-padded batches and beam search. What it
does not give us, we add as logits processors and a stopping criterion that see every step:

- per-row sampling with a per-request `torch.Generator` (transformers samples from the global RNG,
  so seeds would not be reproducible under concurrency or batching): the `Picker` samples itself
  and hands `generate` a one-hot distribution, which greedy decoding then follows;
- OpenAI's additive presence/frequency penalties and per-row repetition penalty;
- the constraint mask (one state per row and beam, see `constraints.processor`);
- a `StepObserver` that streams text, applies stop strings (held back until they cannot be a stop
  string any more), per-row token limits, cancellation and end-of-turn tokens.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ..constraints.base import SequenceConstraint
from .loader import LoadedModel
from .params import ChoiceOutput, GenerationJob, GenerationOutput, SamplingParams

log = logging.getLogger(__name__)

END_TOKEN_STRINGS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the prefix of `text` that can never become part of a stop string."""
    keep = len(text)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                keep = min(keep, len(text) - k)
                break
    while keep > 0 and text[keep - 1] == "\ufffd":  # an incomplete UTF-8 sequence
        keep -= 1
    return keep


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def row_seed(seed: int | None, choice: int) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    return (seed * 1_000_003 + choice * 7_919) & ((1 << 63) - 1)


@dataclass
class RowState:
    """One output sequence of a non-beam generation."""

    job: GenerationJob
    choice: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    done: bool = False
    finish_reason: str = "length"
    logprob_sum: float = 0.0
    error: str | None = None


class PenaltyProcessor(LogitsProcessor):
    """Presence/frequency penalties (additive, OpenAI semantics, over generated tokens only) and
    the multiplicative repetition penalty (over prompt and output), each per row."""

    def __init__(self, row_params: Sequence[SamplingParams], prompt_len: int) -> None:
        self.row_params = row_params
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for r, p in enumerate(self.row_params):
            if p.presence_penalty or p.frequency_penalty:
                gen = input_ids[r, self.prompt_len :]
                if gen.numel():
                    counts = torch.bincount(gen, minlength=scores.shape[1])[: scores.shape[1]]
                    counts = counts.to(scores.dtype)
                    scores[r] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
            if p.repetition_penalty != 1.0:
                ids = input_ids[r]
                picked = scores[r].gather(0, ids)
                picked = torch.where(
                    picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty
                )
                scores[r].scatter_(0, ids, picked)
        return scores


class Picker(LogitsProcessor):
    """Chooses each row's next token itself (sampling with the row's own generator, or argmax)
    and returns a one-hot distribution so that greedy `generate` follows the choice."""

    def __init__(self, rows: Sequence[RowState]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, -math.inf)
        logp = torch.log_softmax(scores.float(), dim=-1)
        for r, row in enumerate(self.rows):
            if row.done:
                out[r, 0] = 0.0
                continue
            p = row.job.params
            if p.do_sample:
                logits = scores[r].float() / p.temperature
                if p.top_k is not None and p.top_k < logits.numel():
                    kth = torch.topk(logits, p.top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                if p.top_p < 1.0:
                    sorted_logits, idx = torch.sort(logits, descending=True)
                    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
                    drop = cum - torch.softmax(sorted_logits, dim=-1) >= p.top_p
                    logits = logits.scatter(0, idx, sorted_logits.masked_fill(drop, -math.inf))
                probs = torch.softmax(logits, dim=-1)
                if not torch.isfinite(probs).all() or probs.sum() <= 0:
                    token = int(torch.argmax(scores[r]))
                else:
                    token = int(torch.multinomial(probs, 1, generator=row.generator))
            else:
                token = int(torch.argmax(scores[r]))
            lp = float(logp[r, token])
            if math.isfinite(lp):
                row.logprob_sum += lp
            out[r, token] = 0.0
        return out


class StepObserver(StoppingCriteria):
    """Sees every appended token: streams text, applies stops, limits, cancellation."""

    def __init__(self, engine: Engine, rows: Sequence[RowState], prompt_len: int) -> None:
        self.engine = engine
        self.rows = rows
        self.prompt_len = prompt_len
        self.constraint_errors: dict[int, str] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for r, row in enumerate(self.rows):
            if row.done:
                continue
            token = last[r]
            row.tokens.append(token)
            job, params = row.job, row.job.params
            if r in self.constraint_errors:
                row.error = self.constraint_errors[r]
                self.finish(row, "error")
                continue
            if token in self.engine.eos_token_ids:
                self.finish(row, "stop", ended_by_eos=True)
                continue
            row.text = self.engine.decode(row.tokens)
            cut = find_stop(row.text, params.stop)
            if cut is not None:
                row.text = row.text[:cut]
                self.finish(row, "stop")
                continue
            if job.cancel.is_set():
                self.finish(row, "cancelled")
                continue
            if len(row.tokens) >= params.max_new_tokens:
                self.finish(row, "length")
                continue
            if job.on_delta is not None:
                keep = stop_holdback(row.text, params.stop)
                if job.constraint is not None:
                    keep = min(keep, job.constraint.releasable(row.text[:keep]))
                if keep > row.sent:
                    job.on_delta(row.choice, row.text[row.sent : keep])
                    row.sent = keep
        return torch.tensor(
            [row.done for row in self.rows], dtype=torch.bool, device=input_ids.device
        )

    def finish(self, row: RowState, reason: str, *, ended_by_eos: bool = False) -> None:
        """End a row. `row.text` is already the text without any end token (an end token is
        never decoded into it) and without a matched stop string."""
        row.done = True
        row.finish_reason = reason
        released = row.text[: row.sent]
        if row.job.constraint is not None:
            row.text = row.job.constraint.finalize(row.text, complete=ended_by_eos)
        if row.job.on_delta is not None and not row.job.cancel.is_set():
            if not row.text.startswith(released):
                log.warning(
                    "final text of choice %d no longer starts with what was streamed", row.choice
                )
            elif len(row.text) > row.sent:
                row.job.on_delta(row.choice, row.text[row.sent :])
            row.sent = len(row.text)


class _CancelAll(StoppingCriteria):
    """Beam search cannot drop a single row: stop when every job of the batch is cancelled."""

    def __init__(self, jobs: Sequence[GenerationJob]) -> None:
        self.jobs = jobs

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        stop = all(job.cancel.is_set() for job in self.jobs)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Owns the model and tokenizer; `generate` is blocking and thread-safe for inference."""

    def __init__(self, loaded: LoadedModel, *, torch_threads: int = 0) -> None:
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_id = loaded.model_id
        self.source = loaded.source
        self.load_seconds = loaded.load_seconds
        self.device = next(self.model.parameters()).device
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.eos_token_ids = self._end_tokens()
        self.pad_token_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(self.eos_token_ids)
        )
        self._decode_lock = threading.Lock()

    def _end_tokens(self) -> frozenset[int]:
        ids: set[int] = set()
        cfg_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif cfg_eos:
            ids.update(int(i) for i in cfg_eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[s] for s in END_TOKEN_STRINGS if s in vocab)
        return frozenset(ids)

    # ------------------------------------------------------------------ text

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    # ------------------------------------------------------------ generation

    def generate(self, jobs: Sequence[GenerationJob]) -> list[GenerationOutput]:
        """Run jobs with equal `batch_key()` as one batch. Blocking."""
        if not jobs:
            return []
        keys = {job.params.batch_key() for job in jobs}
        if len(keys) != 1:
            raise ValueError(f"jobs with different batch keys cannot share a batch: {keys}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            if jobs[0].params.mode == "beam":
                outputs = self._generate_beam(jobs)
            else:
                outputs = self._generate_steps(jobs)
        for out in outputs:
            out.seconds = time.perf_counter() - t0
        return outputs

    def _batch_inputs(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _constraint_processor(
        self,
        roots: Sequence[SequenceConstraint | None],
        prompt_len: int,
        num_beams: int,
        budgets: Sequence[int],
    ) -> LogitsProcessor | None:
        if all(root is None for root in roots):
            return None
        from ..constraints.processor import ConstraintLogitsProcessor

        return ConstraintLogitsProcessor(
            roots,
            prompt_len=prompt_len,
            num_beams=num_beams,
            eos_token_ids=self.eos_token_ids,
            budgets=budgets,
        )

    def _config(self, **kwargs: Any) -> GenerationConfig:
        return GenerationConfig(
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            **kwargs,
        )

    def _generate_steps(self, jobs: Sequence[GenerationJob]) -> list[GenerationOutput]:
        rows: list[RowState] = []
        for job in jobs:
            for choice in range(job.params.n):
                gen = None
                if job.params.do_sample:
                    gen = torch.Generator(device="cpu").manual_seed(
                        row_seed(job.params.seed, choice)
                    )
                rows.append(RowState(job=job, choice=choice, generator=gen))
        input_ids, attention_mask = self._batch_inputs([row.job.prompt_ids for row in rows])
        prompt_len = input_ids.shape[1]
        roots = [row.job.constraint.start() if row.job.constraint else None for row in rows]
        processors = LogitsProcessorList()
        if any(
            p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0
            for p in (row.job.params for row in rows)
        ):
            processors.append(PenaltyProcessor([row.job.params for row in rows], prompt_len))
        constraint_proc = self._constraint_processor(
            roots, prompt_len, 1, [row.job.params.max_new_tokens for row in rows]
        )
        if constraint_proc is not None:
            processors.append(constraint_proc)
        processors.append(Picker(rows))
        observer = StepObserver(self, rows, prompt_len)
        if constraint_proc is not None:
            observer.constraint_errors = constraint_proc.errors
        max_new = max(job.params.max_new_tokens for job in jobs)
        self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._config(max_new_tokens=max_new, do_sample=False, num_beams=1),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([observer]),
        )
        for row in rows:
            if not row.done:  # generate stopped at max_new (cannot happen below a row's own limit)
                observer.finish(row, "length")
        outputs = []
        for job in jobs:
            job_rows = [row for row in rows if row.job is job]
            choices = [
                ChoiceOutput(
                    index=row.choice,
                    text=row.text,
                    token_ids=row.tokens,
                    finish_reason=row.finish_reason,
                    error=row.error,
                    score=row.logprob_sum / max(1, len(row.tokens)),
                )
                for row in job_rows
            ]
            outputs.append(
                GenerationOutput(
                    choices=choices,
                    prompt_tokens=len(job.prompt_ids),
                    completion_tokens=sum(len(row.tokens) for row in job_rows),
                    seconds=0.0,
                    cancelled=job.cancel.is_set(),
                )
            )
        return outputs

    def _generate_beam(self, jobs: Sequence[GenerationJob]) -> list[GenerationOutput]:
        params = jobs[0].params
        n_ret = max(job.params.n for job in jobs)
        input_ids, attention_mask = self._batch_inputs([job.prompt_ids for job in jobs])
        prompt_len = input_ids.shape[1]
        roots = [job.constraint.start() if job.constraint else None for job in jobs]
        processors = LogitsProcessorList()
        beam_params = [job.params for job in jobs for _ in range(params.num_beams)]
        if any(
            p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0
            for p in beam_params
        ):
            processors.append(PenaltyProcessor(beam_params, prompt_len))
        constraint_proc = self._constraint_processor(
            roots, prompt_len, params.num_beams, [job.params.max_new_tokens for job in jobs]
        )
        if constraint_proc is not None:
            processors.append(constraint_proc)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._config(
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                num_beams=params.num_beams,
                num_return_sequences=n_ret,
                length_penalty=params.length_penalty,
                return_dict_in_generate=True,
                output_scores=True,
            ),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([_CancelAll(jobs)]),
        )
        sequences = out.sequences.tolist()
        seq_scores = out.sequences_scores.tolist() if out.sequences_scores is not None else None
        outputs = []
        for j, job in enumerate(jobs):
            choices = []
            total = 0
            for c in range(job.params.n):
                k = j * n_ret + c
                gen = sequences[k][prompt_len:]
                tokens: list[int] = []
                ended = False
                for t in gen:
                    tokens.append(t)
                    if t in self.eos_token_ids:
                        ended = True
                        break
                total += len(tokens)
                text = self.decode(tokens[:-1] if ended else tokens)
                reason = "stop" if ended else "length"
                cut = find_stop(text, job.params.stop)
                if cut is not None:
                    text, reason, ended = text[:cut], "stop", False
                if job.cancel.is_set():
                    reason = "cancelled"
                if job.constraint is not None:
                    text = job.constraint.finalize(text, complete=ended)
                choices.append(
                    ChoiceOutput(
                        index=c,
                        text=text,
                        token_ids=tokens,
                        finish_reason=reason,
                        score=seq_scores[k] if seq_scores else None,
                    )
                )
            if job.on_delta is not None and not job.cancel.is_set():
                for choice in choices:
                    if choice.text:
                        job.on_delta(choice.index, choice.text)
            outputs.append(
                GenerationOutput(
                    choices=choices,
                    prompt_tokens=len(job.prompt_ids),
                    completion_tokens=total,
                    seconds=0.0,
                    cancelled=job.cancel.is_set(),
                )
            )
        return outputs
