"""Chat completions as a service: request model -> constraint -> engine -> response model.

Shared by the chat router (JSON and SSE) and the batch worker, so both build identical responses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .constraints.base import CompiledConstraint
from .engine.params import GenerationJob, GenerationOutput, SamplingParams
from .errors import (
    ApiError,
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    WordlistNotFound,
)
from .protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
    completion_id,
    now,
)
from .serving import ServerState

log = logging.getLogger(__name__)


@dataclass
class ResolvedConstraint:
    constraint: CompiledConstraint
    cache_hit: bool
    compile_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self, texts: list[str], complete: list[bool]) -> dict[str, Any]:
        """The `constraint` extension object: what was enforced and an independent re-check."""
        checks = [self.constraint.check(t) for t in texts]
        violations = sorted({v for c in checks for v in c.violations})
        info: dict[str, Any] = {
            **self.constraint.describe(),
            "cache_hit": self.cache_hit,
            "compile_seconds": round(self.compile_seconds, 4),
            "violations": violations,
            "compliant": all(c.ok for c in checks) and all(complete),
        }
        details = [c.details for c in checks if c.details]
        if details:
            info["checks"] = details
        info.update(self.extra)
        return info


@dataclass
class PreparedChat:
    """A validated request, ready to generate."""

    request: ChatCompletionRequest
    params: SamplingParams
    prompt_ids: list[int]
    constraint: ResolvedConstraint | None
    model_id: str

    def job(self, on_delta: Callable[[int, str], None] | None = None) -> GenerationJob:
        return GenerationJob(
            prompt_ids=self.prompt_ids,
            params=self.params,
            constraint=self.constraint.constraint if self.constraint else None,
            on_delta=on_delta,
        )


def check_model(state: ServerState, name: str, param: str = "model") -> str:
    engine = state.require_engine()
    accepted = {engine.model_id, *state.settings.MODEL_ALIASES}
    if name not in accepted:
        raise ModelNotFound(
            f"The model '{name}' does not exist; this server serves '{engine.model_id}'",
            param=param,
        )
    return engine.model_id


async def resolve_wordlist(
    state: ServerState, lang: str | None, n_words: int | None, *, param_prefix: str = ""
) -> ResolvedConstraint | None:
    """`vocab_lang` + `vocab_n_words` -> a compiled (cached) constraint, or a 4xx naming the field."""
    if lang is None and n_words is None:
        return None
    if lang is None:
        raise InvalidRequest(
            "vocab_n_words needs vocab_lang (they come together)", param=f"{param_prefix}vocab_lang"
        )
    if n_words is None:
        raise InvalidRequest(
            "vocab_lang needs vocab_n_words (they come together)",
            param=f"{param_prefix}vocab_n_words",
        )
    from .constraints.wordlist import LANG_RE, EmptyWordlist
    from .constraints.wordlist import WordlistNotFound as _Missing

    if not LANG_RE.fullmatch(lang):
        raise InvalidRequest(
            "vocab_lang must match [A-Za-z0-9_-]+", param=f"{param_prefix}vocab_lang"
        )
    assert state.registry is not None and state.compiler is not None
    try:
        wordlist = await asyncio.to_thread(state.registry.get, lang)
    except _Missing as exc:
        raise WordlistNotFound(
            f"no word list for language '{lang}'; available: {', '.join(exc.available)}",
            param=f"{param_prefix}vocab_lang",
        ) from exc
    except EmptyWordlist as exc:
        raise InvalidRequest(
            f"the word list for '{lang}' is empty", param=f"{param_prefix}vocab_lang"
        ) from exc
    if not 1 <= n_words <= len(wordlist):
        raise InvalidRequest(
            f"vocab_n_words must be between 1 and {len(wordlist)} (the length of the "
            f"'{lang}' list)",
            param=f"{param_prefix}vocab_n_words",
        )
    t0 = time.perf_counter()
    constraint, hit = await asyncio.to_thread(state.compiler.get, lang, n_words)
    seconds = 0.0 if hit else (constraint.compile_seconds or time.perf_counter() - t0)
    return ResolvedConstraint(constraint=constraint, cache_hit=hit, compile_seconds=seconds)


def build_messages(request: ChatCompletionRequest, hint: str | None) -> list[dict[str, str]]:
    messages = [{"role": m.template_role(), "content": m.text()} for m in request.messages]
    if hint:
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}
        else:
            messages.insert(0, {"role": "system", "content": hint})
    return messages


async def prepare_chat(state: ServerState, request: ChatCompletionRequest) -> PreparedChat:
    """Every check that can fail before generation starts (so errors are plain 4xx JSON)."""
    settings = state.settings
    params = request.to_params(settings)
    model_id = check_model(state, request.model)
    engine = state.require_engine()
    if request.constraints is not None:
        raise InvalidRequest(
            "phonological `constraints` are not available on this server yet", param="constraints"
        )
    if request.drafts is not None:
        raise InvalidRequest("drafts only applies to phonological constraints", param="drafts")
    resolved = await resolve_wordlist(state, request.vocab_lang, request.vocab_n_words)
    if request.vocab_prompt_hint is not None and resolved is None:
        raise InvalidRequest(
            "vocab_prompt_hint only applies with vocab_lang/vocab_n_words",
            param="vocab_prompt_hint",
        )
    use_hint = (
        request.vocab_prompt_hint
        if request.vocab_prompt_hint is not None
        else settings.CONSTRAINT_PROMPT_HINT
    )
    hint = resolved.constraint.prompt_hint() if (resolved and use_hint) else None
    prompt_ids = engine.encode_chat(build_messages(request, hint))
    if len(prompt_ids) > settings.MAX_INPUT_TOKENS:
        raise ContextLengthExceeded(
            f"This model's maximum input length is {settings.MAX_INPUT_TOKENS} tokens; "
            f"your messages resulted in {len(prompt_ids)} tokens",
            param="messages",
        )
    return PreparedChat(request, params, prompt_ids, resolved, model_id)


def finish_reason(reason: str) -> str:
    """Our internal reasons mapped to OpenAI's (`cancelled` never reaches a client)."""
    return {"cancelled": "stop"}.get(reason, reason)


def build_completion(
    prepared: PreparedChat, output: GenerationOutput, response_id: str | None = None
) -> ChatCompletion:
    choices = [
        Choice(
            index=c.index,
            message=ResponseMessage(content=c.text),
            finish_reason=finish_reason(c.finish_reason),
        )
        for c in output.choices
    ]
    constraint = None
    if prepared.constraint is not None:
        constraint = prepared.constraint.report(
            [c.text for c in output.choices],
            [c.finish_reason == "stop" for c in output.choices],
        )
        errors = [c.error for c in output.choices if c.error]
        if errors:
            constraint["errors"] = errors
    return ChatCompletion(
        id=response_id or completion_id(),
        created=now(),
        model=prepared.model_id,
        choices=choices,
        usage=Usage(
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            total_tokens=output.prompt_tokens + output.completion_tokens,
        ),
        constraint=constraint,
    )


def _sse(payload: Any) -> str:
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(exclude_none=False)
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream_chat(
    state: ServerState, prepared: PreparedChat, log_extra: dict[str, Any]
) -> AsyncIterator[str]:
    """SSE events for one request whose limiter slot is already held.

    The role chunk goes out at once; text follows as the engine releases it (never a partial
    word in wordlist mode, never a possible stop-string prefix); beam search sends keep-alive
    comments until the winning beam is known. An error after the start becomes a final
    `data: {"error": ...}` event, which the openai SDK raises as an APIError.
    """
    engine = state.require_engine()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def on_delta(index: int, text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, text))

    job = prepared.job(on_delta)
    rid, created, model = completion_id(), now(), prepared.model_id
    include_usage = bool(
        prepared.request.stream_options and prepared.request.stream_options.include_usage
    )

    def chunk(choices: list[ChunkChoice], **extra: Any) -> str:
        return _sse(
            ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, **extra)
        )

    future = state.submit(engine, [job])
    try:
        for i in range(prepared.params.n):
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
        keepalive = state.settings.STREAM_KEEPALIVE_SECONDS
        last_sent = time.monotonic()
        while True:
            if future.done() and queue.empty():
                break
            try:
                index, text = await asyncio.wait_for(queue.get(), timeout=min(keepalive, 0.25))
            except TimeoutError:
                if time.monotonic() - last_sent >= keepalive:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            last_sent = time.monotonic()
            yield chunk([ChunkChoice(index=index, delta=Delta(content=text))])
        output = future.result()[0]
        completion = build_completion(prepared, output, rid)
        for c in completion.choices:
            last = c.index == completion.choices[-1].index
            yield chunk(
                [ChunkChoice(index=c.index, delta=Delta(), finish_reason=c.finish_reason)],
                constraint=completion.constraint if last else None,
            )
        if include_usage:
            yield chunk([], usage=completion.usage)
        yield "data: [DONE]\n\n"
        log_extra.update(outcome="ok", completion_tokens=output.completion_tokens)
    except asyncio.CancelledError:
        job.cancel.set()
        log_extra.update(outcome="client_disconnected")
        raise
    except ApiError as exc:
        yield _sse(exc.body())
        log_extra.update(outcome=f"error:{exc.code}")
    except Exception:
        log.exception("generation failed mid-stream")
        yield _sse(GenerationFailed("generation failed; see the server log").body())
        log_extra.update(outcome="error:generation_failed")
    finally:
        if not future.done():
            job.cancel.set()
