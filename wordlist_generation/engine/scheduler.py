"""Continuous batching: rows join the running batch between decoding steps and leave when done.

One thread owns the model. Each loop iteration:

1. takes new submissions (rows of sampling/greedy jobs; beam-search jobs run as their own group,
   through `run_beams`, between steps);
2. prefills waiting prompts, at most `prefill_chunk` tokens while other rows are decoding, so a
   long prompt never stalls running streams for more than one chunk (a job's `n` choices share one
   prefill, and a prompt starts from the cached keys/values of the longest prefix it shares with
   a recent prompt: `engine.prefill.PrefixCache`); prompts waiting together are read in one
   forward pass (`engine.prefill.PromptBatch`), as many as fit among the rows and the budget, so
   that a burst of requests costs about one pass instead of one each;
3. decodes one token for every running row in one forward pass over a left-padded KV cache;
4. retires finished rows (their cache rows are dropped, padding columns no row needs are trimmed)
   and completes the jobs whose rows are all done.

Other work on the model (`call`: scoring a text) runs on the same thread between steps, one call
per iteration, so it never overlaps a decoding step and never waits behind a busy lock.

Each row keeps its own constraint state, seeded generator, penalties, stops, `max_tokens` and
cancellation (`engine.rows` and `engine.sampling`, shared with the transformers engine), so a row
decodes exactly as it would alone: the other rows only share the forward pass. Admission (how many
rows at once, the bounded queue, 429) is the limiter's, sized in rows to `max_rows`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import DynamicCache

from .choose import TokenChooser
from .fused_llama import has_dense_prefill
from .kvcache import cache_factory, left_pad
from .params import GenerationJob, GenerationOutput
from .prefill import PrefixCache, PromptBatch, PromptRead, left_padded_mask, stack_caches
from .quant import DENSE_PASS_TOKENS
from .rows import RowState, job_output
from .sampling import row_seed

log = logging.getLogger(__name__)

Done = Callable[[list[GenerationOutput] | BaseException], None]
T = TypeVar("T")


@dataclass
class _Call:
    """Work on the model from outside the decoding loop (`Scheduler.call`)."""

    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn())
        except Exception as exc:
            self.future.set_exception(exc)


@dataclass
class _Entry:
    """One `submit` call: its jobs complete together."""

    jobs: list[GenerationJob]
    done: Done
    started: float = field(default_factory=time.perf_counter)
    outputs: list[GenerationOutput | None] = field(default_factory=list)
    remaining: int = 0

    def finish_job(self, index: int, output: GenerationOutput) -> None:
        output.seconds = time.perf_counter() - self.started
        self.outputs[index] = output
        self.remaining -= 1
        if self.remaining == 0:
            self.done([o for o in self.outputs if o is not None])


@dataclass
class _Group:
    """The rows (choices) of one job; the job completes when all of them are done."""

    entry: _Entry
    job_index: int
    seqs: list[_Seq] = field(default_factory=list)
    completed: bool = False

    def complete_if_done(self) -> None:
        if not self.completed and all(s.row.done for s in self.seqs):
            self.completed = True
            job = self.entry.jobs[self.job_index]
            self.entry.finish_job(
                self.job_index, job_output(job, [s.row.output() for s in self.seqs])
            )


@dataclass
class _Seq:
    """A running row: its text state, constraint state and place in the KV cache."""

    row: RowState
    group: _Group
    prompt_len: int
    constraint: Any  # SequenceConstraint | None
    ids: list[int]  # prompt + generated tokens (penalties look at both)
    length: int = 0  # real tokens in the cache
    last: int = 0  # the token to feed at the next step


@dataclass
class _Prefill:
    """A job whose prompt is being read into its own cache."""

    entry: _Entry
    job_index: int
    ids: torch.Tensor  # [1, L]
    cache: DynamicCache
    pos: int = 0
    #: The logits of the last prompt token where the prefix cache held the whole prompt.
    logits: torch.Tensor | None = None
    #: Whether its passes multiply by dense copies (`CPU_DENSE_PREFILL`): decided once, by the
    #: tokens it has to read, so that a long prompt reads every chunk the same way. A shorter
    #: prompt reads that way too when it shares a long pass (`_prefill_together`).
    dense: bool = False

    @property
    def job(self) -> GenerationJob:
        return self.entry.jobs[self.job_index]


def own_intra_op_threads() -> None:
    """Leave the CPU's intra-op threads to the scheduler thread: every other thread computes on
    one thread from now on.

    With GNU OpenMP each thread that runs parallel torch ops keeps its own team of worker
    threads. Once two teams exist on a small CPU, the one that is idle either spins (taking a
    core) or sleeps (and every parallel region of the other pays a wake-up): single-stream
    decoding on 2 cores went from about 36 to 58-68 ms a token when another thread had computed
    with 2 threads too (measured with the embedded model). torch's setting is read by each thread
    the first time it computes, so this must follow the scheduler thread's own start.
    """
    torch.set_num_threads(1)


class Scheduler:
    def __init__(
        self,
        model: Any,
        *,
        decode: Callable[[Sequence[int]], str],
        eos_token_ids: frozenset[int],
        run_beams: Callable[[list[GenerationJob]], list[GenerationOutput]],
        max_rows: int = 16,
        prefill_chunk: int = 128,
        prefix_cache_size: int = 16,
        threads: int = 0,
    ) -> None:
        self.model = model
        self.prefixes = PrefixCache(prefix_cache_size)
        self.new_cache = cache_factory(model.config)
        self.chooser = TokenChooser(decode, eos_token_ids)
        self.run_beams = run_beams
        self.max_rows = max_rows
        self.prefill_chunk = prefill_chunk
        self.device = next(model.parameters()).device
        self.dense_prefill = has_dense_prefill(model)
        self._inbox: queue.SimpleQueue[_Entry | _Call | None] = queue.SimpleQueue()
        self._beams: deque[_Entry] = deque()
        self._calls: deque[_Call] = deque()
        self._prefills: deque[_Prefill] = deque()
        self._seqs: list[_Seq] = []
        #: Every accepted submission not yet complete, wherever its jobs are (waiting, being
        #: read, decoding, between the two): a failed step fails them all, none is left waiting.
        self._entries: dict[int, _Entry] = {}
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, columns] of 0/1
        self._stopping = False
        #: Decoding steps run and rows decoded; forward passes that read prompts, and prompts
        #: read (diagnostics, benchmarks).
        self.steps = 0
        self.row_steps = 0
        self.prefill_passes = 0
        self.prompts_read = 0
        #: This thread's intra-op threads (0: torch's setting where the scheduler is created).
        self._threads = threads or torch.get_num_threads()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()
        self._started.wait()
        if self.device.type == "cpu":
            own_intra_op_threads()

    # ----------------------------------------------------------------------------- interface

    def submit(self, jobs: Sequence[GenerationJob], done: Done) -> None:
        """Queue `jobs`; `done` is called from the scheduler thread with their outputs (in order)
        or with the exception that failed them."""
        if self._stopping:
            raise RuntimeError("the scheduler is stopped")
        entry = _Entry(list(jobs), done, outputs=[None] * len(jobs), remaining=len(jobs))
        if not jobs:
            done([])
            return
        self._inbox.put(entry)

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the scheduler thread between two decoding steps (one call per step, in
        the order they came), so that it may use the model while rows are decoding: the model is
        only ever run by this thread. The future holds its result or its exception."""
        if self._stopping:
            raise RuntimeError("the scheduler is stopped")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._inbox.put(_Call(fn, future))
        return future

    @property
    def running_rows(self) -> int:
        return len(self._seqs)

    def close(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)

    # ---------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        torch.set_num_threads(self._threads)  # this thread's own OpenMP team, fixed by
        torch.ones(1 << 17).sum()  # a first parallel op: torch reads the setting there
        self._started.set()
        with torch.inference_mode():
            while not self._stopping:
                busy = self._seqs or self._prefills or self._beams or self._calls
                self._take(block=not busy)
                try:
                    self._iterate()
                except Exception as exc:  # fail what was in flight, keep serving
                    log.exception("decoding step failed")
                    self._fail_all(exc)
        self._take(block=False)  # what came in meanwhile fails too, rather than waiting forever
        self._fail_all(RuntimeError("the server is shutting down"))

    def _take(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while item is not None:
            self._accept(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _accept(self, entry: _Entry | _Call) -> None:
        if isinstance(entry, _Call):
            self._calls.append(entry)
            return
        self._entries = {k: e for k, e in self._entries.items() if e.remaining > 0}
        self._entries[id(entry)] = entry
        if entry.jobs[0].params.mode == "beam":
            self._beams.append(entry)
            return
        for i, job in enumerate(entry.jobs):
            ids = torch.tensor([job.prompt_ids], dtype=torch.long, device=self.device)
            reused, cache, logits = self.prefixes.lookup(job.prompt_ids, self.new_cache)
            dense = self.dense_prefill and len(job.prompt_ids) - reused >= DENSE_PASS_TOKENS
            self._prefills.append(_Prefill(entry, i, ids, cache, reused, logits, dense))

    def _iterate(self) -> None:
        if self._calls:
            self._calls.popleft().run()
        if self._beams:
            entry = self._beams.popleft()
            try:
                outputs = self.run_beams(entry.jobs)
            except Exception as exc:
                log.exception("beam search failed")
                entry.done(exc)
            else:
                for i, out in enumerate(outputs):
                    entry.finish_job(i, out)
        self._prefill(self.prefill_chunk if self._seqs else 1 << 30)
        if self._seqs:
            self._decode_step()

    # ------------------------------------------------------------------------------- prefill

    def _prefill(self, budget: int) -> None:
        while budget > 0 and self._prefills:
            if self._drop_cancelled():
                continue
            joined = self._join_cached()
            if joined is None:
                return  # wait for rows to leave
            if joined or self._join_unread_last_token():
                continue
            group = self._prefill_group(budget)
            if len(group) > 1:
                budget -= self._prefill_together(group)
                continue
            p = self._prefills[0]
            job = p.job
            if self._seqs and len(self._seqs) + job.params.n > self.max_rows:
                return  # wait for rows to leave
            total = p.ids.shape[1]
            take = min(budget, total - p.pos)
            chunk = p.ids[:, p.pos : p.pos + take]
            positions = torch.arange(p.pos, p.pos + take, device=self.device).unsqueeze(0)
            out = self.model(
                input_ids=chunk,
                attention_mask=torch.ones((1, p.pos + take), dtype=torch.long, device=self.device),
                position_ids=positions,
                cache=p.cache,
                use_cache=True,
                logits_to_keep=1,
                **self._path(p.dense),
            )
            p.pos += take
            budget -= take
            self.prefill_passes += 1
            if p.pos == total:
                self.prompts_read += 1
                self._prefills.popleft()
                logits = out.logits[0, -1].float()
                self.prefixes.store(job.prompt_ids, p.cache, logits)
                mask = torch.ones((1, total), dtype=torch.long, device=self.device)
                self._start_and_join([(p, logits)], p.cache, mask)

    def _path(self, dense: bool) -> dict[str, bool]:
        """The model's keyword for a prompt pass's path (none where it has no dense copies)."""
        return {"dense_prefill": dense} if self.dense_prefill else {}

    def _join_cached(self) -> bool | None:
        """Start the first waiting prompt if the prefix cache held all of it, from the logits its
        last token gave when it was read (`PrefixCache`): no pass, and the same first pick as
        then. Whether it joined; None when it must wait for rows to leave."""
        p = self._prefills[0]
        if p.logits is None:
            return False
        if self._seqs and len(self._seqs) + p.job.params.n > self.max_rows:
            return None
        self._prefills.popleft()
        self.prompts_read += 1
        mask = torch.ones((1, p.pos), dtype=torch.long, device=self.device)
        self._start_and_join([(p, p.logits)], p.cache, mask)
        return True

    def _join_unread_last_token(self) -> bool:
        """Let the first waiting prompts join the batch without a pass of their own if only their
        last token is unread (the prefix cache held the rest): the next decoding step reads that
        token and gives their first one. Those that arrived together join at once (one copy of
        the batch's cache). Whether any joined."""
        ready: list[_Prefill] = []
        rows = len(self._seqs)
        for p in self._prefills:
            n = p.job.params.n
            # Only after a cached prefix (a one-token prompt has no cache to join with), and not
            # for a prompt read through dense copies, which reads its last token the same way.
            if p.job.cancel.is_set() or p.ids.shape[1] - p.pos != 1 or p.pos == 0 or p.dense:
                break
            if (rows or ready) and rows + n > self.max_rows:
                break
            ready.append(p)
            rows += n
        if not ready:
            return False
        for _ in ready:
            self._prefills.popleft()
        self.prompts_read += len(ready)
        cache = stack_caches([(p.cache, p.pos) for p in ready], self.new_cache)
        mask = left_padded_mask([p.pos for p in ready], self.device)
        self._start_and_join([(p, None) for p in ready], cache, mask)
        return True

    def _drop_cancelled(self) -> bool:
        """Finish the first waiting prompt if its job was cancelled; whether it was."""
        p = self._prefills[0]
        job = p.job
        if not job.cancel.is_set():
            return False
        self._prefills.popleft()
        rows = [RowState(job=job, choice=c) for c in range(job.params.n)]
        for row in rows:
            row.finish("cancelled")
        p.entry.finish_job(p.job_index, job_output(job, [r.output() for r in rows]))
        return True

    def _prefill_group(self, budget: int) -> list[_Prefill]:
        """The waiting prompts (in order) to read in one pass: as many as have room among the
        rows and within `budget` tokens (each row reads the longest unread end among them), while
        their padding stays under the tokens they read."""
        group: list[_Prefill] = []
        rows, width, read = len(self._seqs), 0, 0
        for p in self._prefills:
            if p.job.cancel.is_set() or p.logits is not None:
                break
            left = p.ids.shape[1] - p.pos
            wider = max(width, left)
            if group and (
                rows + p.job.params.n > self.max_rows
                or wider * (len(group) + 1) > budget
                or wider * (len(group) + 1) > 2 * (read + left)
            ):
                break
            group.append(p)
            rows, width, read = rows + p.job.params.n, wider, read + left
        return group

    def _prefill_together(self, group: list[_Prefill]) -> int:
        """Read the prompts of `group` in one forward pass and start their rows; the tokens read
        (padding included)."""
        batch = PromptBatch(
            [PromptRead(p.job.prompt_ids, p.cache, p.pos) for p in group],
            self.new_cache,
            self.device,
        )
        # Through the dense copies if one of them reads that way, or if the pass is long.
        dense = any(p.dense for p in group) or batch.width * len(group) >= DENSE_PASS_TOKENS
        logits = batch.run(self.model, **self._path(dense))
        self.prefill_passes += 1
        self.prompts_read += len(group)
        for i, p in enumerate(group):
            self._prefills.popleft()
            self.prefixes.store_columns(p.job.prompt_ids, batch.row_columns(i), logits[i])
        self._start_and_join(list(zip(group, logits, strict=True)), batch.cache, batch.mask)
        return batch.width * len(group)

    def _start_and_join(
        self,
        read: list[tuple[_Prefill, torch.Tensor | None]],
        cache: DynamicCache,
        mask: torch.Tensor,
    ) -> None:
        """Start the rows of prompts just read (each with its logits, or None: the next decoding
        step reads its last token) and join the running ones to the batch with their prompt's row
        of `cache` and `mask` (row i for `read[i]`; a prompt's choices share its row)."""
        joining: list[_Seq] = []
        index: list[int] = []
        for i, (p, logits) in enumerate(read):
            running = self._start_rows(p, logits)
            joining.extend(running)
            index.extend([i] * len(running))
        if not joining:
            return
        if index != list(range(len(read))):
            rows = torch.tensor(index, dtype=torch.long, device=self.device)
            cache.batch_select_indices(rows)
            mask = mask[rows]
        self._join(cache, joining, mask)

    def _start_rows(self, p: _Prefill, logits: torch.Tensor | None) -> list[_Seq]:
        """The job's prompt is read: pick each choice's first token from `logits`; the rows still
        running. Without logits, the rows are to read the last prompt token in their first
        decoding step."""
        job = p.job
        group = _Group(p.entry, p.job_index)
        seqs = group.seqs
        for choice in range(job.params.n):
            generator = None
            if job.params.samples(choice):
                generator = torch.Generator(device="cpu").manual_seed(
                    row_seed(job.params.seed, choice)
                )
            root = job.constraint.start() if job.constraint is not None else None
            seq = _Seq(
                row=RowState(job=job, choice=choice, generator=generator),
                group=group,
                prompt_len=len(job.prompt_ids),
                constraint=root,
                ids=list(job.prompt_ids),
                length=len(job.prompt_ids),
            )
            if logits is None:
                seq.length, seq.last = p.pos, job.prompt_ids[-1]
            seqs.append(seq)
        if logits is not None:
            self.chooser.choose(seqs, logits.unsqueeze(0).repeat(len(seqs), 1))
        group.complete_if_done()
        return [s for s in seqs if not s.row.done]

    def _join(self, cache: DynamicCache, seqs: list[_Seq], mask: torch.Tensor) -> None:
        """Append rows to the batch: their cache and their [rows, columns] mask, left-padding
        whichever side is shorter (padding columns are masked out)."""
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._seqs = cache, mask, list(seqs)
            return
        length = mask.shape[1]
        width = max(self._mask.shape[1], length)
        old_pad = width - self._mask.shape[1]
        new_pad = width - length
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([left_pad(old.keys, old_pad), left_pad(new.keys, new_pad)])
            old.values = torch.cat([left_pad(old.values, old_pad), left_pad(new.values, new_pad)])
        self._mask = torch.cat(
            [
                torch.nn.functional.pad(self._mask, (old_pad, 0)),
                torch.nn.functional.pad(mask, (new_pad, 0)),
            ]
        )
        self._seqs.extend(seqs)

    # -------------------------------------------------------------------------------- decode

    def _decode_step(self) -> None:
        assert self._cache is not None and self._mask is not None
        seqs = self._seqs
        ids = torch.tensor([[s.last] for s in seqs], dtype=torch.long, device=self.device)
        positions = torch.tensor([[s.length] for s in seqs], dtype=torch.long, device=self.device)
        self._mask = torch.nn.functional.pad(self._mask, (0, 1), value=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
        self.steps += 1
        self.row_steps += len(seqs)
        for seq in seqs:
            seq.length += 1
        self.chooser.choose(seqs, logits)
        self._retire()

    def _retire(self) -> None:
        done = [s for s in self._seqs if s.row.done]
        if not done:
            return
        self._complete(done)
        keep = [i for i, s in enumerate(self._seqs) if not s.row.done]
        if not keep:
            self._seqs, self._cache, self._mask = [], None, None
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._seqs = [self._seqs[i] for i in keep]
        first = int(self._mask.any(dim=0).nonzero()[0])
        if first > 0:  # columns only the departed rows used
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]

    def _complete(self, finished: list[_Seq]) -> None:
        for seq in finished:
            seq.group.complete_if_done()

    def _fail_all(self, exc: BaseException) -> None:
        entries, self._entries = self._entries, {}
        self._seqs, self._cache, self._mask = [], None, None
        self._prefills.clear()
        self._beams.clear()
        calls, self._calls = list(self._calls), deque()
        for call in calls:
            if call.future.set_running_or_notify_cancel():
                call.future.set_exception(exc)
        for entry in entries.values():
            if entry.remaining > 0:
                entry.remaining = 0
                entry.done(exc)
