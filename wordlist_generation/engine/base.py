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
- `describe` reports the model, `health` what `/health` should add (an upstream pool's state);
- declared capabilities, with neutral defaults: `check_request` refuses what this engine cannot
  run (a 400 naming the parameter, before any work), `context_limit` bounds prompt + max_tokens,
  `enforcement` says where a constraint is enforced (the response's `constraint` object).

No HTTP here, and no module-level state: an engine is created by the app's lifespan (or injected
by a test: `create_app(settings, engine=FakeEngine())`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from .params import GenerationJob, GenerationOutput, SamplingParams, ScoreOutput

if TYPE_CHECKING:
    from ..constraints.base import CompiledConstraint


class ChatTokenizer:
    """`encode_chat` and `decode` over `self.tokenizer` (a transformers tokenizer), shared by
    engines that tokenize in this process."""

    tokenizer: Any

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


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

    def health(self) -> dict[str, Any]:
        """Fields `/health` adds to its body (none for an in-process model)."""
        return {}

    def healthy(self) -> bool:
        """False when this engine cannot generate at all right now (no upstream is up)."""
        return True

    def check_request(self, params: SamplingParams, constraint: CompiledConstraint | None) -> None:
        """Raise a 4xx `ApiError` naming the parameter this engine cannot honour (or a 503 when
        it cannot generate now), before anything is queued. The default accepts everything."""
        return None

    def context_limit(self) -> int | None:
        """Most tokens of prompt + max_tokens one sequence may have (None: no limit beyond the
        server's MAX_INPUT_TOKENS)."""
        return None

    def enforcement(self, constraint: CompiledConstraint) -> dict[str, Any] | None:
        """Where `constraint` is enforced, for the response's `constraint` object (None: by this
        process's own masks, every step, as the constraint describes itself)."""
        return None

    def close(self) -> None:
        """Release threads and memory at shutdown (after in-flight rows were cancelled)."""
        return None
