"""Admission before any heavy work: the generation queue's fast-fail, the bounded gate in front
of constraint compiles and previews, and a queued client that leaves."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fakes import AUTH

from wordlist_generation.engine.params import GenerationJob, SamplingParams
from wordlist_generation.errors import Overloaded
from wordlist_generation.services.limiter import GenerationLimiter, WorkGate

MODEL = "fake-model"


def chat(**kw) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    body.update(kw)
    return body


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_queue_refuses_before_compiling_anything(make_client):
    """1 row running, 1 request waiting: a constrained request with a list size never compiled
    before gets its 429 at once, and nothing was compiled for it."""
    client, engine = make_client()
    state = client.app.state.server
    engine.gate.clear()
    threads = [
        threading.Thread(
            target=client.post, args=("/v1/chat/completions",), kwargs={"json": chat(), "headers": AUTH}
        )
        for _ in range(2)
    ]
    threads[0].start()
    assert engine.started.wait(10)
    threads[1].start()
    wait_for(lambda: state.limiter.waiting == 1)
    compiled_before = len(state.compiler)
    r = client.post(
        "/v1/chat/completions", json=chat(vocab_lang="es", vocab_n_words=777), headers=AUTH
    )
    assert r.status_code == 429 and r.headers["retry-after"]
    assert len(state.compiler) == compiled_before
    engine.gate.set()
    for t in threads:
        t.join(10)


def test_the_work_gate_bounds_running_and_waiting_work():
    async def scenario() -> None:
        gate = WorkGate(concurrency=1, queue_size=1)
        release = threading.Event()
        first = asyncio.ensure_future(gate.run(release.wait, 10))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(gate.run(lambda: "second"))
        await asyncio.sleep(0.05)
        assert (gate.running, gate.waiting) == (1, 1)
        with pytest.raises(Overloaded):
            await gate.run(lambda: "third")
        # The batch worker waits instead of being refused.
        third = asyncio.ensure_future(gate.run(lambda: "third", wait=True))
        # A caller that leaves does not free the slot: its thread still runs.
        first.cancel()
        await asyncio.sleep(0.05)
        assert gate.running == 1
        release.set()
        assert await second == "second" and await third == "third"
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(scenario())


def test_the_fast_fail_matches_what_acquire_would_decide():
    async def scenario() -> None:
        limiter = GenerationLimiter(capacity=2, queue_size=1)
        limiter.check(2)
        await limiter.acquire(2)
        limiter.check(1)  # would wait: allowed
        waiter = asyncio.ensure_future(limiter.acquire(1))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            limiter.check(1)
        limiter.release(2)
        await waiter
        limiter.check(1)

    asyncio.run(scenario())


def test_a_queued_client_that_leaves_gives_its_place_back_at_once(make_client):
    client, engine = make_client()
    state = client.app.state.server
    engine.gate.clear()
    running = threading.Thread(
        target=client.post, args=("/v1/chat/completions",), kwargs={"json": chat(), "headers": AUTH}
    )
    running.start()
    assert engine.started.wait(10)

    async def leave_while_queued() -> bool:
        job = GenerationJob(prompt_ids=[1, 2], params=SamplingParams(max_new_tokens=4))
        calls = 0

        async def is_disconnected() -> bool:
            nonlocal calls
            calls += 1
            return calls >= 2

        outputs = await state.run_generation([job], is_disconnected, poll_seconds=0.02)
        return outputs[0].cancelled and not outputs[0].choices

    assert client.portal.call(leave_while_queued)
    assert state.limiter.waiting == 0 and state.limiter.running == 1  # still the first one
    engine.gate.set()
    running.join(10)
    wait_for(lambda: state.limiter.running == 0)
