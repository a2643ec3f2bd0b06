"""The Engine protocol: what the services need from whatever produces tokens.

Implementations: `engine.hf.HFEngine` (transformers, in-process). The interface is shaped so that a
continuous-batching scheduler (rows admitted between decoding steps) and a remote engine (a pool of
servers streaming text back) fit it unchanged:

- `encode_chat` turns messages into prompt token ids (blocking; services call it in a thread);
- `submit` starts a list of rows (`GenerationJob`s) and returns at once with an awaitable of their
  outputs; each row streams its text through its own `on_delta` callback as it is produced, and
  stops within a token when its `cancel` event is set (`cancel`);
- `batch_key` says which rows may share one `submit` (the batch worker groups by it);
- `score` reads a given text instead of writing one: the log-probability of each of its tokens
  (blocking; services call it in a thread);
- `describe` reports the model.

No HTTP here, and no module-level state: an engine is created by the app's lifespan (or injected
by a test: `create_app(settings, engine=FakeEngine())`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Hashable, Sequence
from typing import Any

from .params import GenerationJob, GenerationOutput, SamplingParams, ScoreOutput


class Engine(ABC):
    #: The id clients send as `model` (aliases are the server's business, not the engine's).
    model_id: str
    #: Where the weights came from (a path, the embedded GGUF, a URL), for logs and /health.
    source: str
    #: The tokenizer constraints are compiled against (a transformers tokenizer): constraint
    #: masks are per token id, so they must use exactly the ids this engine generates.
    tokenizer: Any

    @abstractmethod
    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt token ids of a chat, with the generation prompt appended. Blocking."""

    @abstractmethod
    def submit(self, jobs: Sequence[GenerationJob]) -> Awaitable[list[GenerationOutput]]:
        """Start generating `jobs` (one output per job, in order); call on the event loop.

        Returns at once. Text arrives through each job's `on_delta` (from any thread) while the
        rows run; the awaitable resolves when every row has finished, been cancelled or failed.
        Every job of one call must have the same `batch_key`.
        """

    @abstractmethod
    def score(self, context_ids: list[int], target_ids: list[int], top_k: int) -> ScoreOutput:
        """The log-probability of each of `target_ids` given everything before it (`context_ids`
        first, which must not be empty), and the `top_k` most likely tokens at each of those
        positions. No sampling, no penalties, no constraint: the model's own distribution on the
        weights that generate. Blocking."""

    def cancel(self, job: GenerationJob) -> None:
        """Stop one row (within a token); its output comes back with what it had."""
        job.cancel.set()

    def batch_key(self, params: SamplingParams) -> Hashable:
        """Rows with equal keys may be submitted together."""
        return params.batch_key()

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "source": self.source}

    def close(self) -> None:
        """Release threads and memory at shutdown (after in-flight rows were cancelled)."""
        return None
