"""A fake engine for unit tests: no model, the real tokenizer, the real row logic.

`FakeEngine` replies with scripted text, token by token, through `engine.rows.RowState` (the same
stop, limit, cancellation, streaming and trimming rules as the transformers engine), so tests of
the services, routers and middleware run in milliseconds with `TestClient`:

    app = create_chat_app(settings, engine=FakeEngine(tokenizer))
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wordlist_generation.constraints.base import CheckReport, CompiledConstraint
from wordlist_generation.engine.base import Engine
from wordlist_generation.engine.params import (
    GenerationJob,
    GenerationOutput,
    ScoreOutput,
    TokenLogprob,
)
from wordlist_generation.engine.rows import RowState, end_token_ids, job_output
from wordlist_generation.settings import Settings

Reply = str | Callable[[GenerationJob, int], str]


class FakeEngine(Engine):
    def __init__(
        self,
        tokenizer: Any,
        reply: Reply = "Hello world. This is a fake answer.",
        *,
        model_id: str = "fake-model",
        token_seconds: float = 0.0,
        end: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.source = "fake"
        self.reply = reply
        self.token_seconds = token_seconds
        #: Append an end-of-turn token after the reply (False: the reply runs until max_tokens).
        self.end = end
        self.eos_token_ids = end_token_ids(tokenizer)
        self.eos = min(self.eos_token_ids)
        #: Every job submitted, in order (tests inspect parameters and constraints).
        self.submitted: list[GenerationJob] = []
        #: Every scoring call: (context ids, target ids, top_k).
        self.scored: list[tuple[list[int], list[int], int]] = []
        #: Cleared to hold every generation before its first token (tests of queues/limits).
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-generate")

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def submit(self, jobs: Sequence[GenerationJob]) -> Awaitable[list[GenerationOutput]]:
        self.submitted.extend(jobs)
        return asyncio.get_running_loop().run_in_executor(self._pool, self.generate, jobs)

    def _text(self, job: GenerationJob, choice: int) -> str:
        return self.reply(job, choice) if callable(self.reply) else self.reply

    def generate(self, jobs: Sequence[GenerationJob]) -> list[GenerationOutput]:
        self.started.set()
        self.gate.wait(30)
        outputs = []
        for job in jobs:
            rows = []
            for choice in range(job.params.n):
                row = RowState(job=job, choice=choice)
                tokens = list(
                    self.tokenizer.encode(self._text(job, choice), add_special_tokens=False)
                )
                if self.end:
                    tokens.append(self.eos)
                for token in tokens:
                    if self.token_seconds:
                        time.sleep(self.token_seconds)
                    if job.params.logprobs is not None:
                        row.record(fake_logprob(token, job.params.logprobs))
                    row.push(token, self.decode, self.eos_token_ids)
                    if row.done:
                        break
                if not row.done:
                    row.finish("length")
                rows.append(row.output())
            outputs.append(job_output(job, rows))
        return outputs

    def score(self, context_ids: list[int], target_ids: list[int], top_k: int) -> ScoreOutput:
        """Deterministic fake log-probabilities: each token's depends on it and the token before
        it; the alternatives are the next `top_k` ids, less likely one after another."""
        if not context_ids:
            raise ValueError("scoring needs at least one context token")
        self.scored.append((list(context_ids), list(target_ids), top_k))
        before = [context_ids[-1], *target_ids][: len(target_ids)]
        logprobs = [
            -0.25 - ((7 * t + 3 * b) % 40) / 8 for t, b in zip(target_ids, before, strict=True)
        ]
        top_ids = [[(t + j) % 1000 for j in range(top_k)] for t in target_ids] if top_k else []
        top_logprobs = [[-0.1 - j for j in range(top_k)] for _ in target_ids] if top_k else []
        return ScoreOutput(logprobs, top_ids, top_logprobs)

    def close(self) -> None:
        self.gate.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def fake_logprob(token: int, k: int) -> TokenLogprob:
    """Deterministic entry of a chosen token: its log-probability depends on the id alone, the
    model's own is 0.5 lower (as a mask renormalises), and the chosen token leads its `k`
    alternatives, each next id one nat less likely."""
    logprob = -0.25 - (token % 7) / 4
    top = tuple((token + j, logprob - j) for j in range(k))
    return TokenLogprob(id=token, logprob=logprob, raw_logprob=logprob - 0.5, top=top)


TOKEN = "unit-test-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "SECRET_TOKEN": TOKEN,
        "DEFAULT_NUM_BEAMS": 1,
        "GENERATION_MAX_CONCURRENCY": 1,
        "GENERATION_QUEUE_SIZE": 1,
        "STREAM_KEEPALIVE_SECONDS": 0.2,
        "MAX_REQUEST_BYTES": 4096,
        "BATCH_JOB_DIR": tmp / "jobs",
        "BATCH_JOB_TEMP_DIR": tmp / "uploads",
        "PREBUILD_PREFIX": False,
        "LEXICON_PRELOAD": False,
    }
    values.update(overrides)
    return Settings(**values)


def wait_ready(client: Any, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/health").json()
        if body["status"] != "loading":
            return body
        time.sleep(0.02)
    raise AssertionError("the app did not become ready")


class TextConstraint(CompiledConstraint):
    """A constraint that only judges text: every text streams and stays as it is, and `check`
    passes. Tests subclass it for the one part they need (a mask, a soft score, a grammar)."""

    def start(self):  # pragma: no cover - only subclasses that decode define it
        raise NotImplementedError

    def releasable(self, text: str) -> int:
        return len(text)

    def finalize(self, text: str, complete: bool) -> str:
        return text

    def check(self, text: str) -> CheckReport:
        return CheckReport(ok=True)
