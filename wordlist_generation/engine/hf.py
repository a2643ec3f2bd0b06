"""The transformers engine: batched `generate` with our own per-row logic, in a thread pool.

transformers gives us the decoding loop, KV cache, left-padded batches and beam search. What it
does not give us, we add as logits processors and a stopping criterion that see every step:

- per-row sampling with a per-request `torch.Generator` (transformers samples from the global RNG,
  so seeds would not be reproducible under concurrency or batching): the `Picker` samples itself
  and hands `generate` a one-hot distribution, which greedy decoding then follows;
- OpenAI's additive presence/frequency penalties and per-row repetition penalty;
- the constraint mask (one state per row and beam, see `constraints.processor`);
- a `StepObserver` that feeds every token to its row (`engine.rows`: streaming, stop strings held
  back until they cannot be a stop string any more, per-row token limits, cancellation, end tokens).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
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
from .base import ChatTokenizer, Engine
from .loader import LoadedModel
from .logprobs import beam_entries
from .params import GenerationJob, GenerationOutput, ScoreOutput
from .rows import RowState, end_token_ids, finished_sequence, job_output
from .sampling import PenaltyProcessor, Picker, RawLogprobs, needs_penalties, row_seed
from .scheduler import Scheduler

log = logging.getLogger(__name__)

#: Positions whose float32 log-softmax is computed at once when scoring a text.
_SCORE_SLICE = 256


class StepObserver(StoppingCriteria):
    """Sees every appended token: streams text, applies stops, limits, cancellation."""

    def __init__(self, engine: HFEngine, rows: Sequence[RowState], prompt_len: int) -> None:
        self.engine = engine
        self.rows = rows
        self.prompt_len = prompt_len
        self.constraint_errors: dict[int, str] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for r, row in enumerate(self.rows):
            if not row.done:
                row.push(
                    last[r],
                    self.engine.decode,
                    self.engine.eos_token_ids,
                    error=self.constraint_errors.get(r),
                )
        return torch.tensor(
            [row.done for row in self.rows], dtype=torch.bool, device=input_ids.device
        )


class _CancelAll(StoppingCriteria):
    """Beam search cannot drop a single row: stop when every job of the batch is cancelled."""

    def __init__(self, jobs: Sequence[GenerationJob]) -> None:
        self.jobs = jobs

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        stop = all(job.cancel.is_set() for job in self.jobs)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class HFEngine(ChatTokenizer, Engine):
    """Owns the model and tokenizer; `generate` is blocking and thread-safe for inference;
    `submit` hands rows to the continuous-batching `Scheduler` (`max_rows` decoded together)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        torch_threads: int = 0,
        max_rows: int = 16,
        prefill_chunk: int = 128,
    ) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_id = loaded.model_id
        self.source = loaded.source
        self.load_seconds = loaded.load_seconds
        self.quantization = loaded.quantization
        self.device = next(self.model.parameters()).device
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.eos_token_ids = end_token_ids(
            self.tokenizer, self.model.generation_config.eos_token_id
        )
        self.pad_token_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(self.eos_token_ids)
        )
        self.scheduler = Scheduler(
            self.model,
            decode=self.decode,
            eos_token_ids=self.eos_token_ids,
            run_beams=self.generate,
            max_rows=max_rows,
            prefill_chunk=prefill_chunk,
            threads=torch_threads,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "source": self.source,
            "vocab_size": self.vocab_size,
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 2),
            "quantization": self.quantization,
        }

    def health(self) -> dict[str, Any]:
        """The weights every answer, score and logprob comes from: `CPU_QUANTIZATION` as applied
        (int4, int8, or none: as loaded) and the device; whether long prompt passes multiply by
        dense copies of those weights (`CPU_DENSE_PREFILL`)."""
        return {
            "engine": "hf",
            "quantization": self.quantization,
            "dense_prefill": self.scheduler.dense_prefill,
            "device": str(self.device),
        }

    def submit(self, jobs: Sequence[GenerationJob]) -> Awaitable[list[GenerationOutput]]:
        """Rows join the scheduler's running batch at its next step (beam jobs run as a group)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[GenerationOutput]] = loop.create_future()

        def settle(result: list[GenerationOutput] | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.scheduler.submit(jobs, lambda result: loop.call_soon_threadsafe(settle, result))
        return future

    def close(self) -> None:
        self.scheduler.close()

    def score(self, context_ids: list[int], target_ids: list[int], top_k: int) -> ScoreOutput:
        """One plain forward pass over context + target, run on the scheduler's thread between
        two decoding steps (`Scheduler.call`): the thread that owns the model, so the pass never
        overlaps a decoding step, a prefill or a beam search, and running rows wait for it as they
        wait for one prefill chunk. Blocking: the caller's thread waits for the result."""
        if not context_ids:
            raise ValueError("scoring needs at least one context token")
        return self.scheduler.call(lambda: self._score(context_ids, target_ids, top_k)).result()

    def _score(self, context_ids: list[int], target_ids: list[int], top_k: int) -> ScoreOutput:
        """Float32 log-softmax of the logits at positions len(context) - 1 .. end - 1 (each
        predicts the next token), read a slice of positions at a time so that only the model's
        own logits are held whole."""
        t0 = time.perf_counter()
        n = len(target_ids)
        with torch.inference_mode():
            ids = torch.tensor([context_ids + target_ids], dtype=torch.long, device=self.device)
            # Logits of the last n + 1 positions; the very last predicts past the text.
            logits = self.model(input_ids=ids, use_cache=False, logits_to_keep=n + 1).logits[0]
            targets = torch.tensor(target_ids, dtype=torch.long, device=logits.device)
            logprobs: list[float] = []
            top_ids: list[list[int]] = []
            top_logprobs: list[list[float]] = []
            for start in range(0, n, _SCORE_SLICE):
                end = min(n, start + _SCORE_SLICE)
                logp = torch.log_softmax(logits[start:end].float(), dim=-1)
                logprobs += logp.gather(1, targets[start:end, None])[:, 0].tolist()
                if top_k > 0:
                    values, indices = torch.topk(logp, top_k, dim=-1)
                    top_ids += indices.tolist()
                    top_logprobs += values.tolist()
        return ScoreOutput(logprobs, top_ids, top_logprobs, time.perf_counter() - t0)

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
                if job.params.samples(choice):
                    gen = torch.Generator(device="cpu").manual_seed(
                        row_seed(job.params.seed, choice)
                    )
                rows.append(RowState(job=job, choice=choice, generator=gen))
        input_ids, attention_mask = self._batch_inputs([row.job.prompt_ids for row in rows])
        prompt_len = input_ids.shape[1]
        roots = [row.job.constraint.start() if row.job.constraint else None for row in rows]
        raw = RawLogprobs()
        processors = LogitsProcessorList([raw])
        if needs_penalties([row.job.params for row in rows]):
            processors.append(PenaltyProcessor([row.job.params for row in rows], prompt_len))
        constraint_proc = self._constraint_processor(
            roots, prompt_len, 1, [row.job.params.max_new_tokens for row in rows]
        )
        if constraint_proc is not None:
            processors.append(constraint_proc)
        processors.append(Picker(rows, raw))
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
                row.finish("length")
        return [job_output(job, [row.output() for row in rows if row.job is job]) for job in jobs]

    def _generate_beam(self, jobs: Sequence[GenerationJob]) -> list[GenerationOutput]:
        params = jobs[0].params
        n_ret = max(job.params.n for job in jobs)
        input_ids, attention_mask = self._batch_inputs([job.prompt_ids for job in jobs])
        prompt_len = input_ids.shape[1]
        roots = [job.constraint.start() if job.constraint else None for job in jobs]
        processors = LogitsProcessorList()
        beam_params = [job.params for job in jobs for _ in range(params.num_beams)]
        if needs_penalties(beam_params):
            processors.append(PenaltyProcessor(beam_params, prompt_len))
        constraint_proc = self._constraint_processor(
            roots, prompt_len, params.num_beams, [job.params.max_new_tokens for job in jobs]
        )
        if constraint_proc is not None:
            processors.append(constraint_proc)
        # The raw logits of every step and beam are kept only when some job asks for logprobs.
        want_logprobs = any(job.params.logprobs is not None for job in jobs)
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
                output_logits=want_logprobs,
            ),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([_CancelAll(jobs)]),
        )
        sequences = out.sequences.tolist()
        seq_scores = out.sequences_scores.tolist() if out.sequences_scores is not None else None
        outputs = []
        for j, job in enumerate(jobs):
            choices = []
            for c in range(job.params.n):
                k = j * n_ret + c
                generated = sequences[k][prompt_len:]
                error = None
                if constraint_proc is not None:
                    error = constraint_proc.error_of(j, _until_end(generated, self.eos_token_ids))
                entries = None
                if job.params.logprobs is not None:
                    entries = beam_entries(
                        out, k, _until_end(generated, self.eos_token_ids), job.params.logprobs
                    )
                choices.append(
                    finished_sequence(
                        job,
                        c,
                        generated,
                        self.decode,
                        self.eos_token_ids,
                        score=seq_scores[k] if seq_scores else None,
                        error=error,
                        token_logprobs=entries,
                    )
                )
            if job.on_delta is not None and not job.cancel.is_set():
                for choice in choices:
                    if job.on_logprobs is not None and choice.token_logprobs:
                        job.on_logprobs(choice.index, list(choice.token_logprobs))
                    if choice.text:
                        job.on_delta(choice.index, choice.text)
            outputs.append(job_output(job, choices))
        return outputs


def _until_end(generated: Sequence[int], eos_token_ids: frozenset[int]) -> list[int]:
    """A finished beam's tokens up to and including its first end token (padding dropped)."""
    out: list[int] = []
    for t in generated:
        out.append(t)
        if t in eos_token_ids:
            break
    return out
