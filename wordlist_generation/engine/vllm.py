"""The vLLM engine: this server as a gateway in front of a pool of vLLM OpenAI servers.

The gateway keeps everything but the decoding: it tokenizes (with the served model's own
tokenizer, so that constraints are compiled against the ids the upstream generates), compiles the
constraint, and sends each output row to the least busy upstream as a `/v1/completions` request
with the prompt as token ids and the constraint's exported Lark grammar as
`structured_outputs: {"grammar": ...}` (the upstream runs it with llguidance:
`--structured-outputs-config.backend guidance`). The generated token ids stream back
(`return_token_ids`) into the same `RowState` the local engine uses: partial words and possible
stop strings are held back, stops and `max_tokens` end the row here, and the final text is
re-checked by the independent checker like any other answer.

What a grammar cannot carry is said, not hidden (`enforcement`): the phonological mode's per-step
steering (placing required words before `max_tokens` runs out, and not ending before they are
written) runs only in the local engine, so here the required words depend on the prompt, and the
re-check reports whether they came. Log-probabilities are the upstream's (vLLM's default logprobs
mode: the model's own, before penalties and the grammar). Beam search and `no_repeat_ngram_size`
have no vLLM equivalent under a grammar: 400 naming the parameter.

Failures are OpenAI-shaped: no upstream up 503, an upstream that refuses or breaks a request 502,
one that does not answer within `VLLM_READ_TIMEOUT_SECONDS` 504. A row whose server cannot be
reached, or fails before a token came back, is sent once to another server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import (
    ApiError,
    BadGateway,
    GatewayTimeout,
    UnsupportedParameter,
    UpstreamUnavailable,
)
from .base import ChatTokenizer, Engine
from .params import GenerationJob, GenerationOutput, SamplingParams, ScoreOutput, TokenLogprob
from .pool import Upstream, UpstreamPool
from .rows import RowState, end_token_ids, job_output
from .sampling import row_seed

if TYPE_CHECKING:
    from ..constraints.base import CompiledConstraint
    from ..settings import Settings

log = logging.getLogger(__name__)

#: How often a row waiting for its upstream looks at its cancel flag (seconds).
_CANCEL_POLL = 0.05
#: Characters of an upstream's error message passed on to the client.
_UPSTREAM_MESSAGE_CHARS = 400


class _Retryable(Exception):
    """The upstream could not be reached or failed before streaming anything: another may do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _upstream_message(body: bytes) -> str:
    """The `message` of an upstream's JSON error (or the start of its body)."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message") if isinstance(err, dict) else None
        text = str(message if message is not None else data)
    except ValueError:
        text = body.decode("utf-8", "replace")
    return text[:_UPSTREAM_MESSAGE_CHARS]


def _token_id(token: str) -> int | None:
    """The id of a `token_id:N` token (vLLM's `return_tokens_as_token_ids`)."""
    if token.startswith("token_id:"):
        try:
            return int(token[len("token_id:") :])
        except ValueError:
            return None
    return None


def resolve_tokenizer_dir(settings: Settings, model: str, served: dict[str, Any]) -> Path:
    """Where the served model's tokenizer is: VLLM_TOKENIZER, VLLM_MODEL when it is a local
    directory, or the path the upstream loaded the model from (`root`), when it is one here."""
    candidates = [settings.VLLM_TOKENIZER, model, str(served.get(model, {}).get("root") or "")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    if settings.VLLM_TOKENIZER:
        raise ValueError(f"VLLM_TOKENIZER {settings.VLLM_TOKENIZER!r} is not a directory")
    raise ValueError(
        f"the tokenizer of {model!r} is not on this machine: set VLLM_TOKENIZER to a local "
        "directory with the served model's tokenizer files"
    )


class VLLMEngine(ChatTokenizer, Engine):
    """Rows decoded by a pool of vLLM servers, streamed back through `RowState`."""

    def __init__(
        self,
        pool: UpstreamPool,
        tokenizer: Any,
        *,
        model: str,
        served_model_id: str = "",
        read_timeout: float = 120.0,
        eos_token_ids: frozenset[int] | None = None,
    ) -> None:
        self.pool = pool
        self.tokenizer = tokenizer
        self.model = model
        self.model_id = served_model_id or model
        self.source = "vllm: " + ", ".join(u.url for u in pool.upstreams)
        self.eos_token_ids = eos_token_ids or end_token_ids(tokenizer)
        self.timeout = httpx.Timeout(read_timeout, connect=pool.connect_timeout)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, wait_seconds: float = 600.0) -> VLLMEngine:
        """Check the pool, find the served model and load its tokenizer (blocking). Waits up to
        `wait_seconds` for an upstream when the model or its tokenizer must come from one."""
        from transformers import AutoTokenizer, GenerationConfig

        pool = UpstreamPool(
            settings.VLLM_URLS,
            api_key=settings.VLLM_API_KEY.get_secret_value(),
            model=settings.VLLM_MODEL,
            connect_timeout=settings.VLLM_CONNECT_TIMEOUT_SECONDS,
            health_interval=settings.VLLM_HEALTH_INTERVAL_SECONDS,
        )
        needs_upstream = not settings.VLLM_MODEL or not (
            settings.VLLM_TOKENIZER or Path(settings.VLLM_MODEL).is_dir()
        )
        deadline = time.monotonic() + wait_seconds
        while pool.check_all() == 0 and needs_upstream:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no upstream answered within {wait_seconds:.0f} s: "
                    + "; ".join(f"{u.url}: {u.last_error}" for u in pool.upstreams)
                )
            time.sleep(min(2.0, settings.VLLM_HEALTH_INTERVAL_SECONDS))
        pool.start()
        served = pool.served()
        model = settings.VLLM_MODEL or next(iter(served))
        directory = resolve_tokenizer_dir(settings, model, served)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        configured = None
        if (directory / "generation_config.json").is_file():
            configured = GenerationConfig.from_pretrained(directory).eos_token_id
        log.info(
            "vLLM pool: %d of %d upstreams up, model %s, tokenizer from %s",
            pool.up_count, len(pool.upstreams), model, directory,
        )  # fmt: skip
        return cls(
            pool,
            tokenizer,
            model=model,
            served_model_id=settings.SERVED_MODEL_ID,
            read_timeout=settings.VLLM_READ_TIMEOUT_SECONDS,
            eos_token_ids=end_token_ids(tokenizer, configured),
        )

    # ------------------------------------------------------------ capabilities

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "source": self.source, "engine": "vllm", "model": self.model}

    def health(self) -> dict[str, Any]:
        return {"engine": "vllm", "upstreams": self.pool.summary()}

    def healthy(self) -> bool:
        return self.pool.up_count > 0

    def check_request(self, params: SamplingParams, constraint: CompiledConstraint | None) -> None:
        if params.mode == "beam":
            raise UnsupportedParameter(
                "num_beams > 1 is not available on this server: its engine (vLLM) has no beam "
                "search under a grammar; use num_beams 1, or drafts to rank several answers",
                param="num_beams",
            )
        if params.no_repeat_ngram_size:
            raise UnsupportedParameter(
                "no_repeat_ngram_size is not available on this server's engine (vLLM); use "
                "repetition_penalty, presence_penalty or frequency_penalty",
                param="no_repeat_ngram_size",
            )
        if constraint is not None and constraint.exported_grammar() is None:
            raise UnsupportedParameter(
                "this constraint has no grammar the vLLM engine can run", param="vocab_lang"
            )
        if not self.healthy():
            raise self.pool.unavailable()

    def context_limit(self) -> int | None:
        entry = self.pool.served().get(self.model, {})
        limit = entry.get("max_model_len")
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    def enforcement(self, constraint: CompiledConstraint) -> dict[str, Any]:
        info = {
            "engine": "vllm",
            "grammar": "decoded by the upstream vLLM under this server's grammar (llguidance)",
            "recheck": "every returned text, by this server's independent checker",
            "logprobs": "the upstream model's own, before penalties and the grammar",
        }
        grammar = constraint.exported_grammar()
        if grammar is not None and grammar.not_carried:
            info["steering"] = (
                f"not applied: {grammar.not_carried}. The upstream runs the grammar alone (the "
                "prompt hint still asks for them); the re-check reports what is missing"
            )
        return info

    # ------------------------------------------------------------ generation

    def submit(self, jobs: Sequence[GenerationJob]) -> Awaitable[list[GenerationOutput]]:
        return asyncio.ensure_future(self._run_jobs(list(jobs)))

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers=self.pool.headers,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            self._client_loop = loop
        return self._client

    async def _run_jobs(self, jobs: list[GenerationJob]) -> list[GenerationOutput]:
        t0 = time.perf_counter()
        rows = [[RowState(job=job, choice=c) for c in range(job.params.n)] for job in jobs]
        tasks = [asyncio.ensure_future(self._run_row(row)) for job_rows in rows for row in job_rows]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if pending:  # one row's upstream failure fails the request: the others stop now
                for job in jobs:
                    job.cancel.set()
                await asyncio.wait(pending)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        failures = [e for t in tasks if (e := t.exception()) is not None]
        if failures:
            raise next((e for e in failures if isinstance(e, ApiError)), failures[0])
        seconds = time.perf_counter() - t0
        outputs = []
        for job, job_rows in zip(jobs, rows, strict=True):
            output = job_output(job, [row.output() for row in job_rows])
            output.seconds = seconds
            outputs.append(output)
        return outputs

    async def _run_row(self, row: RowState) -> None:
        """One row on one upstream; once more on another if the first failed before streaming."""
        tried: list[Upstream] = []
        while True:
            upstream = self.pool.acquire(exclude=tried)
            tried.append(upstream)
            try:
                await self._watch(row, upstream)
                return
            except _Retryable as exc:
                self.pool.mark_down(upstream, exc.reason)
                if row.tokens or len(tried) > 1 or self.pool.up_count == 0:
                    if row.tokens:
                        raise BadGateway(
                            f"the upstream model server failed mid-answer ({exc.reason})"
                        ) from None
                    raise UpstreamUnavailable(
                        f"no upstream model server could take the request ({exc.reason})",
                        headers={"Retry-After": "5"},
                    ) from None
                log.warning("row failed on %s before streaming (%s); trying another",
                            upstream.url, exc.reason)  # fmt: skip
            finally:
                self.pool.release(upstream)

    async def _watch(self, row: RowState, upstream: Upstream) -> None:
        """Stream `row` from `upstream`, stopping it within `_CANCEL_POLL` of a cancel."""
        task = asyncio.ensure_future(self._stream(row, upstream))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=_CANCEL_POLL)
                if not task.done() and row.job.cancel.is_set():
                    task.cancel()  # closing the stream makes vLLM abort the request
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                    break
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done() and not task.cancelled():
            task.result()
        if not row.done:
            row.finish("cancelled")

    def _body(self, row: RowState) -> dict[str, Any]:
        params, choice = row.job.params, row.choice
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(row.job.prompt_ids),
            "max_tokens": params.max_new_tokens,
            "stream": True,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            # At least the chosen token's: draft ranking reads the model-alone log-probability.
            "logprobs": params.logprobs if params.logprobs is not None else 0,
            "skip_special_tokens": True,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "repetition_penalty": params.repetition_penalty,
        }
        if params.samples(choice):
            body.update(temperature=params.temperature, top_p=params.top_p)
            if params.top_k:
                body["top_k"] = params.top_k
            if params.seed is not None:
                body["seed"] = row_seed(params.seed, choice)
        else:
            body["temperature"] = 0.0
        constraint = row.job.constraint
        if constraint is not None:
            grammar = constraint.exported_grammar()
            assert grammar is not None  # check_request refused the others
            body["structured_outputs"] = {"grammar": grammar.text}
        return body

    async def _stream(self, row: RowState, upstream: Upstream) -> None:
        url = f"{upstream.url}/v1/completions"
        finish: str | None = None
        try:
            async with self._http().stream("POST", url, json=self._body(row)) as response:
                if response.status_code != 200:
                    message = _upstream_message(await response.aread())
                    if response.status_code >= 500:
                        raise _Retryable(f"{response.status_code}: {message}")
                    raise BadGateway(
                        f"the upstream model server refused the request "
                        f"({response.status_code}: {message})"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:  # vLLM reports a grammar it cannot compile here
                        what = "failed mid-answer" if row.tokens else "refused the request"
                        raise BadGateway(
                            f"the upstream model server {what}: " + _upstream_message(data.encode())
                        )
                    for choice in chunk.get("choices", []):
                        self._take(row, choice)
                        if row.done:
                            return  # a stop string, max_tokens or the end token: close
                        finish = choice.get("finish_reason") or finish
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise _Retryable("connect timeout") from None
            raise GatewayTimeout(
                f"the upstream model server sent nothing for {self.timeout.read:.0f} s"
            ) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if row.tokens:
                raise BadGateway(
                    f"the upstream model server failed mid-answer ({type(exc).__name__})"
                ) from None
            raise _Retryable(type(exc).__name__) from None
        except ValueError as exc:  # not JSON
            raise BadGateway(f"the upstream model server sent an unreadable chunk: {exc}") from None
        if row.done:
            return
        if finish == "stop":  # the end token (no stop strings are sent upstream)
            row.finish("stop", ended_by_eos=True)
        elif finish == "length":
            row.finish("length")
        elif finish is None:
            raise BadGateway("the upstream model server ended its stream without finishing")
        else:
            row.error = f"the upstream finished with {finish!r}"
            row.finish("error")

    def _take(self, row: RowState, choice: dict[str, Any]) -> None:
        """Push one chunk's tokens (with their log-probabilities) into `row`."""
        ids = choice.get("token_ids") or []
        logprobs = choice.get("logprobs") or {}
        values = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or []
        for i, token in enumerate(ids):
            value = values[i] if i < len(values) and values[i] is not None else float("nan")
            row.add_logprobs(value, value)
            if row.token_logprobs is not None:
                top = tops[i] if i < len(tops) and tops[i] else {}
                pairs = sorted(
                    ((tid, lp) for t, lp in top.items() if (tid := _token_id(t)) is not None),
                    key=lambda p: -p[1],
                )
                want = row.job.params.logprobs or 0
                row.record(TokenLogprob(int(token), value, value, tuple(pairs[:want])))
            row.push(int(token), self.decode, self.eos_token_ids)
            if row.done:
                return

    # ------------------------------------------------------------ scoring

    def score(self, context_ids: list[int], target_ids: list[int], top_k: int) -> ScoreOutput:
        """Prompt log-probabilities of context + target from an upstream (`prompt_logprobs`)."""
        if not context_ids:
            raise ValueError("scoring needs at least one context token")
        t0 = time.perf_counter()
        body = {
            "model": self.model,
            "prompt": context_ids + target_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": top_k,
        }
        tried: list[Upstream] = []
        while True:
            upstream = self.pool.acquire(exclude=tried)
            tried.append(upstream)
            try:
                response = httpx.post(
                    f"{upstream.url}/v1/completions",
                    json=body,
                    headers=self.pool.headers,
                    timeout=self.timeout,
                )
            except httpx.TimeoutException:
                raise GatewayTimeout("the upstream model server did not answer in time") from None
            except httpx.HTTPError as exc:
                self.pool.mark_down(upstream, type(exc).__name__)
                if len(tried) > 1:
                    raise UpstreamUnavailable("no upstream model server could score") from None
                continue
            finally:
                self.pool.release(upstream)
            break
        if response.status_code != 200:
            raise BadGateway(
                f"the upstream model server refused to score ({response.status_code}: "
                f"{_upstream_message(response.content)})"
            )
        try:
            positions = response.json()["choices"][0]["prompt_logprobs"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BadGateway("the upstream model server sent no prompt log-probabilities") from None
        start = len(context_ids)
        logprobs: list[float] = []
        top_ids: list[list[int]] = []
        top_logprobs: list[list[float]] = []
        for offset, target in enumerate(target_ids):
            entry = positions[start + offset] or {}
            chosen = entry.get(str(target)) or {}
            logprobs.append(float(chosen.get("logprob", float("-inf"))))
            if top_k > 0:
                ranked = sorted(
                    ((int(t), v) for t, v in entry.items() if (v.get("rank") or 0) <= top_k),
                    key=lambda p: p[1].get("rank") or 0,
                )[:top_k]
                top_ids.append([t for t, _ in ranked])
                top_logprobs.append([float(v["logprob"]) for _, v in ranked])
        return ScoreOutput(logprobs, top_ids, top_logprobs, time.perf_counter() - t0)

    def close(self) -> None:
        self.pool.close()
        client, self._client = self._client, None
        if client is not None:
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop here: the connections go with the process
                pass
