"""Continuous batching on a tiny random model: rows that join and leave a running batch give the
tokens each would give alone (greedy ones on the embedded model too, as the server runs it, and
a repeated seeded request decodes as the first); cancellation frees a place at once; constrained
and unconstrained rows share a batch."""

from __future__ import annotations

import threading

import pytest
import torch

from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.wordlist import WordlistRegistry, wordlist_compiler
from wordlist_generation.engine.hf import HFEngine
from wordlist_generation.engine.loader import load_model
from wordlist_generation.engine.params import GenerationJob, GenerationOutput, SamplingParams
from wordlist_generation.engine.quant import DENSE_PASS_TOKENS
from wordlist_generation.settings import REPO_ROOT

PROMPTS = [
    "Tell me about the sea.",
    "Write a short poem about a cat who likes to sleep in the sun all day long.",
    "Hi",
    "List three fruits and say which one you like best, and why, in one sentence.",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    e = HFEngine(load_model(str(tiny_model_dir)), torch_threads=1, max_rows=8, prefill_chunk=8)
    yield e
    e.close()


def prompt(engine: HFEngine, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


def run(
    engine: HFEngine, jobs: list[GenerationJob], timeout: float = 120
) -> list[GenerationOutput]:
    box: list = []
    done = threading.Event()

    def finish(result) -> None:
        box.append(result)
        done.set()

    engine.scheduler.submit(jobs, finish)
    assert done.wait(timeout), "the scheduler did not finish"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def alone(engine: HFEngine, job: GenerationJob) -> list[list[int]]:
    fresh = GenerationJob(prompt_ids=job.prompt_ids, params=job.params, constraint=job.constraint)
    [out] = run(engine, [fresh])
    return [c.token_ids for c in out.choices]


def first_divergence(engine: HFEngine, job: GenerationJob, got: list[int], want: list[int]) -> str:
    """Where two token lists part, and the top-2 logit gap of the model alone at that point."""
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if i is None:
        return "same tokens" if len(got) == len(want) else f"lengths {len(got)} != {len(want)}"
    ids = torch.tensor([job.prompt_ids + want[:i]])
    with torch.inference_mode():
        logits = engine.model(input_ids=ids).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return f"first difference at token {i}: logit gap {float(top[0] - top[1]):.2e}"


def assert_same_tokens(
    engine: HFEngine, job: GenerationJob, got: list[list[int]], want: list[list[int]]
) -> None:
    """Each choice's tokens as wanted; else fail naming, per choice, where they part
    (`first_divergence`)."""
    if got != want:
        pytest.fail(
            "; ".join(first_divergence(engine, job, g, w) for g, w in zip(got, want, strict=True))
        )


def staggered(engine: HFEngine, jobs: list[GenerationJob], after_tokens: int = 3) -> list:
    """Submit jobs[0]; each next job joins once the previous one has streamed `after_tokens`
    deltas, so rows join a running batch; all finish at different times."""
    results: dict[int, GenerationOutput] = {}
    finished = threading.Event()

    def submit(k: int) -> None:
        job = jobs[k]
        count = [0]

        def on_delta(_choice: int, _text: str) -> None:
            count[0] += 1
            if count[0] == after_tokens and k + 1 < len(jobs):
                submit(k + 1)

        job.on_delta = on_delta

        def finish(result) -> None:
            results[k] = result[0] if isinstance(result, list) else result
            if k + 1 < len(jobs) and k + 1 not in results and count[0] < after_tokens:
                submit(k + 1)  # ended before streaming enough: start the next one anyway
            if len(results) == len(jobs):
                finished.set()

        engine.scheduler.submit([job], finish)

    submit(0)
    assert finished.wait(180)
    return [results[k] for k in range(len(jobs))]


def check_rows_join_and_leave(engine: HFEngine, mode: str, reference: bool) -> None:
    """Each prompt decoded alone, then all of them joining a running batch one after another and
    leaving at different lengths: every row's tokens must be the same; where they are not, the
    failure names the first position and the model's top-2 logit gap there (a tie that a batched
    matrix product flipped, or a real bug)."""

    def params(i: int) -> SamplingParams:
        limit = 12 + 5 * i
        if mode == "greedy":
            return SamplingParams(max_new_tokens=limit)
        return SamplingParams(
            max_new_tokens=limit, do_sample=True, temperature=0.9, seed=10 + i, n=2
        )

    jobs = [
        GenerationJob(prompt_ids=prompt(engine, p), params=params(i)) for i, p in enumerate(PROMPTS)
    ]
    expected = [alone(engine, job) for job in jobs]
    if reference and mode == "greedy":  # the scheduler's own loop agrees with transformers'
        reference_out = engine.generate(
            [GenerationJob(prompt_ids=j.prompt_ids, params=j.params) for j in jobs]
        )
        assert [[c.token_ids for c in o.choices] for o in reference_out] == expected
    steps, row_steps = engine.scheduler.steps, engine.scheduler.row_steps
    outputs = staggered(engine, jobs)
    steps, row_steps = engine.scheduler.steps - steps, engine.scheduler.row_steps - row_steps
    assert row_steps > steps  # rows really shared decoding steps
    for job, out, want in zip(jobs, outputs, expected, strict=True):
        assert not isinstance(out, BaseException), out
        assert_same_tokens(engine, job, [c.token_ids for c in out.choices], want)
    assert engine.scheduler.running_rows == 0


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_rows_joining_and_leaving_decode_as_they_would_alone(engine, mode):
    check_rows_join_and_leave(engine, mode, reference=True)


@pytest.fixture(scope="module")
def embedded_engine():
    """The embedded SmolLM2 as the server runs it by default: int4 weights, fused layers, dense
    copies for prompt passes of 32 tokens or more, two threads, 16 rows."""
    loaded = load_model(None, cpu_quantization="auto", cpu_dense_prefill=True)
    e = HFEngine(loaded, torch_threads=2, max_rows=16)
    assert e.quantization == "int4" and e.health()["dense_prefill"] is True
    yield e
    e.close()


@pytest.mark.slow
def test_on_the_embedded_model_greedy_rows_joining_and_leaving_decode_as_they_would_alone(
    embedded_engine,
):
    """No greedy pick flips on the embedded model's test prompts, as the server runs it. Its int4
    and int8 kernels give a row the same result in any batch, and a long prompt is read through
    the dense copies alone or beside others; attention over a left-padded batch
    rounds the last bits differently (README, "Continuous batching"), never enough here to
    change an argmax. transformers' own `generate` runs other kernels: no reference here."""
    check_rows_join_and_leave(embedded_engine, "greedy", reference=False)


@pytest.mark.slow
def test_on_the_embedded_model_a_repeated_seeded_request_decodes_as_the_first(embedded_engine):
    """The prefix cache holds the whole prompt after the first run: the repeat starts from the
    logits its last token gave then. Reading that token again in a decoding step rounds its last
    bits differently, and the int4 kernels' bfloat16 activations carry that on to ~0.1 nats,
    which parted these seeded draws."""
    params = SamplingParams(max_new_tokens=24, do_sample=True, temperature=0.9, seed=11, n=2)
    jobs = [GenerationJob(prompt_ids=prompt(embedded_engine, p), params=params) for p in PROMPTS]
    embedded_engine.scheduler.prefixes.clear()  # the first run reads each prompt
    first = [alone(embedded_engine, job) for job in jobs]
    hits = embedded_engine.scheduler.prefixes.hits
    again = [alone(embedded_engine, job) for job in jobs]
    assert embedded_engine.scheduler.prefixes.hits - hits == len(jobs)
    for job, got, want in zip(jobs, again, first, strict=True):
        assert_same_tokens(embedded_engine, job, got, want)


@pytest.fixture(scope="module")
def dense_engine(tiny_model_dir):
    """The tiny model as the server runs a quantized one: int4, dense copies for prompts."""
    loaded = load_model(str(tiny_model_dir), cpu_quantization="int4", cpu_dense_prefill=True)
    e = HFEngine(loaded, torch_threads=1, max_rows=8, prefill_chunk=8)
    assert e.scheduler.dense_prefill and e.health()["dense_prefill"] is True
    yield e
    e.close()


def test_a_long_prompt_reads_through_the_dense_copies_alone_beside_others_or_in_chunks(
    dense_engine, dense_rows
):
    """A prompt with DENSE_PASS_TOKENS or more to read goes through the dense copies, alone,
    beside a short prompt or in chunks while another row decodes (so it gives, to the bit, the
    tokens it gives alone); a short prompt read alone goes through the kernels."""
    tokenizer = dense_engine.tokenizer
    long_ids = tokenizer(" ".join(PROMPTS * 2))["input_ids"]
    short_ids = tokenizer(PROMPTS[2])["input_ids"]
    assert len(short_ids) < DENSE_PASS_TOKENS <= len(long_ids) <= 128
    params = SamplingParams(max_new_tokens=6)
    long_job = GenerationJob(prompt_ids=long_ids, params=params)
    short_job = GenerationJob(prompt_ids=short_ids, params=params)
    scheduler = dense_engine.scheduler
    rows = dense_rows
    per_pass = 4 * dense_engine.model.config.num_hidden_layers

    scheduler.prefixes.clear()
    want_long = alone(dense_engine, long_job)
    assert rows == [len(long_ids)] * per_pass  # one pass, dense
    rows.clear()
    scheduler.prefixes.clear()
    alone(dense_engine, short_job)
    assert rows == []  # the kernels

    scheduler.prefixes.clear()
    together = run(dense_engine, [long_job, short_job])
    assert rows and sum(rows) >= len(long_ids) * per_pass
    assert [c.token_ids for c in together[0].choices] == want_long

    # Read while another row decodes: 8 tokens a step (`prefill_chunk`), each chunk dense.
    rows.clear()
    scheduler.prefixes.clear()
    busy = GenerationJob(prompt_ids=short_ids, params=SamplingParams(max_new_tokens=40))
    started = threading.Event()
    busy.on_delta = lambda *_: started.set()
    scheduler.submit([busy], lambda _: None)
    assert started.wait(60)
    rows.clear()
    [chunked] = run(dense_engine, [GenerationJob(prompt_ids=long_ids, params=params)])
    assert sum(rows) == len(long_ids) * per_pass and max(rows) <= 8
    assert [c.token_ids for c in chunked.choices] == want_long


def test_a_one_token_prompt_joins_a_running_batch(engine):
    """A prompt of one token has no cached prefix to join the batch with: it is read by a pass of
    its own, and the running row goes on (joining it as a cached prompt failed every row)."""
    busy = GenerationJob(prompt_ids=prompt(engine, PROMPTS[0]), params=SamplingParams(40))
    started = threading.Event()
    busy.on_delta = lambda *_: started.set()
    box: list = []
    finished = threading.Event()
    engine.scheduler.submit([busy], lambda result: (box.append(result), finished.set()))
    assert started.wait(60)
    one = GenerationJob(
        prompt_ids=engine.tokenizer("Hi")["input_ids"][:1], params=SamplingParams(4)
    )
    [out] = run(engine, [one])
    assert out.choices[0].finish_reason in ("stop", "length") and out.choices[0].token_ids
    assert finished.wait(60) and not isinstance(box[0], BaseException)
    assert box[0][0].choices[0].finish_reason in ("stop", "length")


def test_a_failed_step_fails_a_job_between_its_prompt_and_the_batch(engine, monkeypatch):
    """A prompt just read, not yet among the running rows, when a step fails: its request fails
    with the others instead of waiting forever."""

    def broken(*args, **kwargs):
        raise RuntimeError("joining failed")

    monkeypatch.setattr(engine.scheduler, "_join", broken)
    job = GenerationJob(prompt_ids=prompt(engine, PROMPTS[1]), params=SamplingParams(4))
    with pytest.raises(RuntimeError, match="joining failed"):
        run(engine, [job], timeout=30)
    monkeypatch.undo()
    [out] = run(engine, [job])  # and the scheduler goes on
    assert out.choices[0].token_ids


def test_a_cancelled_row_frees_its_place_at_once(engine):
    long = SamplingParams(max_new_tokens=400)
    jobs = [GenerationJob(prompt_ids=prompt(engine, PROMPTS[0]), params=long) for _ in range(8)]
    started = threading.Event()
    jobs[0].on_delta = lambda *_: started.set()
    box: list = []
    engine.scheduler.submit(jobs, box.append)
    assert started.wait(60)
    waiting = GenerationJob(
        prompt_ids=prompt(engine, "Hi"), params=SamplingParams(max_new_tokens=4)
    )
    got: list = []
    engine.scheduler.submit([waiting], got.append)
    # The batch is full (8 rows): the new row waits until one leaves.
    jobs[3].cancel.set()
    deadline = threading.Event()
    for _ in range(600):
        if got:
            break
        deadline.wait(0.05)
    assert got, "the waiting row never got the cancelled row's place"
    assert got[0][0].choices[0].finish_reason in ("stop", "length")
    for job in jobs:
        job.cancel.set()
    for _ in range(600):
        if box:
            break
        deadline.wait(0.05)
    [out] = [o for o in box[0] if o.cancelled][:1]
    assert out.choices[0].finish_reason == "cancelled"
    assert engine.scheduler.running_rows == 0


def test_constrained_and_unconstrained_rows_share_a_batch(engine):
    compiler = wordlist_compiler(engine.tokenizer, WordlistRegistry(REPO_ROOT / "wordlists"))
    constraint = compiler.compile(WordlistSpec("en", 300)).constraint
    p = SamplingParams(max_new_tokens=20)
    free = GenerationJob(prompt_ids=prompt(engine, PROMPTS[1]), params=p)
    bound = GenerationJob(prompt_ids=prompt(engine, PROMPTS[1]), params=p, constraint=constraint)
    want_free, want_bound = alone(engine, free), alone(engine, bound)
    passes, read = engine.scheduler.prefill_passes, engine.scheduler.prompts_read
    out_free, out_bound = run(engine, [free, bound])
    # Both prompts were cached but for their last token: the first decoding step read it.
    assert engine.scheduler.prefill_passes == passes
    assert engine.scheduler.prompts_read == read + 2
    assert [c.token_ids for c in out_free.choices] == want_free
    assert [c.token_ids for c in out_bound.choices] == want_bound
    report = constraint.check(out_bound.choices[0].text)
    assert report.ok, report.violations
    assert want_free != want_bound  # the mask really acted on one row only


def test_a_shared_prompt_prefix_is_read_once_and_changes_nothing(engine):
    from wordlist_generation.engine.scheduler import Scheduler

    plain = Scheduler(
        engine.model,
        decode=engine.decode,
        eos_token_ids=engine.eos_token_ids,
        run_beams=engine.generate,
        prefix_cache_size=0,
    )
    try:
        system = {"role": "system", "content": "Answer in short, simple sentences. " * 4}
        jobs = [
            GenerationJob(
                prompt_ids=engine.encode_chat([system, {"role": "user", "content": text}]),
                params=SamplingParams(max_new_tokens=10),
            )
            for text in ("Tell me about cats.", "Tell me about the moon and the stars.")
        ]
        hits, reused = engine.scheduler.prefixes.hits, engine.scheduler.prefixes.reused_tokens
        cached = [run(engine, [job])[0].choices[0].token_ids for job in jobs]
        assert engine.scheduler.prefixes.hits == hits + 1
        assert engine.scheduler.prefixes.reused_tokens - reused >= 40  # the system prompt
        engine.scheduler, saved = plain, engine.scheduler
        try:
            fresh = [run(engine, [job])[0].choices[0].token_ids for job in jobs]
        finally:
            engine.scheduler = saved
        assert cached == fresh
    finally:
        plain.close()


def test_prompts_that_arrive_together_are_read_in_one_pass(engine):
    """Prompts of different lengths, partly in the prefix cache (a shared system prompt), one of
    them with two sampled choices: one forward pass reads them all, and every row decodes the
    tokens it decodes alone."""
    system = {"role": "system", "content": "You write for children learning to read. " * 3}
    texts = ["Tell me about the sea.", "Hi", PROMPTS[1], PROMPTS[3]]

    def job(i: int, text: str) -> GenerationJob:
        params = SamplingParams(max_new_tokens=10 + 2 * i)
        if i == 2:
            params = SamplingParams(max_new_tokens=12, do_sample=True, temperature=0.9, seed=7, n=2)
        return GenerationJob(
            prompt_ids=engine.encode_chat([system, {"role": "user", "content": text}]),
            params=params,
        )

    jobs = [job(i, t) for i, t in enumerate(texts)]
    expected = [alone(engine, j) for j in jobs]
    batched = [GenerationJob(prompt_ids=j.prompt_ids, params=j.params) for j in jobs]
    # Only the system prompt is cached now: the rows have unread ends of different lengths.
    engine.scheduler.prefixes.clear()
    run(engine, [job(0, "Hello there, how are you today?")])
    passes, read = engine.scheduler.prefill_passes, engine.scheduler.prompts_read
    hits = engine.scheduler.prefixes.hits
    outputs = run(engine, batched)
    assert engine.scheduler.prompts_read - read == len(jobs)
    assert engine.scheduler.prefill_passes - passes == 1
    assert engine.scheduler.prefixes.hits - hits == len(jobs)  # each reads only its own end
    for j, out, want in zip(batched, outputs, expected, strict=True):
        got = [c.token_ids for c in out.choices]
        if got != want:
            pytest.fail(
                "; ".join(first_divergence(engine, j, g, w) for g, w in zip(got, want, strict=True))
            )
    assert engine.scheduler.running_rows == 0


def test_only_the_scheduler_thread_computes_on_several_cores(tiny_model_dir):
    """Two OpenMP teams in one process halve CPU decoding speed (`own_intra_op_threads`): the
    scheduler thread keeps TORCH_NUM_THREADS, any other thread computes on one."""
    engine = HFEngine(load_model(str(tiny_model_dir)), torch_threads=2)
    try:
        assert engine.scheduler.call(torch.get_num_threads).result(timeout=30) == 2
        assert torch.get_num_threads() == 1
        seen: list[int] = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [1]
    finally:
        engine.close()
