"""Chat completions as a service: request model -> constraint -> engine -> response model.

Shared by the chat router (JSON and SSE) and the batch worker, so both build identical responses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .constraints.base import CheckReport, CompiledConstraint
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

DEFAULT_DRAFTS = 3


@dataclass
class ResolvedConstraint:
    constraint: CompiledConstraint
    cache_hit: bool
    compile_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self, checks: list[CheckReport]) -> dict[str, Any]:
        """The `constraint` extension object: what was enforced and the independent re-checks of
        the returned texts (`self.constraint.check`, one per choice).

        `compliant` comes from the re-check alone: an answer cut by max_tokens before its required
        words appeared is reported as not compliant, with the verdicts saying what is missing.
        """
        violations = sorted({v for c in checks for v in c.violations})
        info: dict[str, Any] = {
            **self.constraint.describe(),
            "cache_hit": self.cache_hit,
            "compile_seconds": round(self.compile_seconds, 4),
            "violations": violations,
            "compliant": all(c.ok for c in checks),
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
    #: Candidates per returned choice (phonological soft constraints pick among drafts).
    drafts: int = 1

    def job(self, on_delta: Callable[[int, str], None] | None = None) -> GenerationJob:
        params = self.params
        if self.drafts > 1:
            params = replace(params, n=params.n * self.drafts)
        return GenerationJob(
            prompt_ids=self.prompt_ids,
            params=params,
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


async def resolve_phonological(
    state: ServerState,
    raw: Any,
    vocab_lang: str | None,
    vocab_n_words: int | None,
    max_tokens: int,
    *,
    param_prefix: str = "",
) -> ResolvedConstraint:
    """`constraints` (+ optional `vocab_n_words`) -> a solved, compiled (cached) constraint."""
    from . import phonology

    if vocab_lang is not None and vocab_lang != "en":
        raise InvalidRequest(
            "phonological constraints use the English pronunciation lexicon; "
            "vocab_lang must be 'en' or absent",
            param=f"{param_prefix}vocab_lang",
        )
    if vocab_n_words is not None and vocab_n_words < 1:
        raise InvalidRequest(
            "vocab_n_words must be at least 1", param=f"{param_prefix}vocab_n_words"
        )
    constraints = phonology.parse(raw, f"{param_prefix}constraints")
    service = state.phonology
    assert service is not None
    compiled = await asyncio.to_thread(
        service.compile, constraints, vocab_n_words, state.settings.CONSTRAINT_BACKEND
    )
    phonology.check_budget(compiled.constraint, max_tokens, f"{param_prefix}max_tokens")
    return ResolvedConstraint(
        constraint=compiled.constraint,
        cache_hit=compiled.cache_hit,
        compile_seconds=compiled.compile_seconds,
        extra={"solve_seconds": round(compiled.solve_seconds, 4)},
    )


def choose_drafts(resolved: ResolvedConstraint, params: SamplingParams, asked: int | None) -> int:
    """How many candidates to generate per returned choice.

    Soft constraints pick among drafts (default 3). Sampling draws them as extra samples; beam
    search takes them from its best beams, so it needs `num_beams >= n x drafts`; greedy decoding
    has a single candidate.
    """
    soft = getattr(resolved.constraint, "has_soft_constraints", False)
    if not soft:
        if asked not in (None, 1):
            raise InvalidRequest(
                "drafts only applies when the request has soft constraints (bound_boost)",
                param="drafts",
            )
        return 1
    if params.mode == "sample":
        return asked or DEFAULT_DRAFTS
    capacity = params.num_beams // params.n
    if asked is None:
        return max(1, min(DEFAULT_DRAFTS, capacity))
    if asked > capacity:
        raise InvalidRequest(
            f"drafts={asked} needs num_beams >= n x drafts = {params.n * asked} without sampling "
            f"(num_beams is {params.num_beams}); raise num_beams or set temperature > 0",
            param="drafts",
        )
    return asked


def select_drafts(
    prepared: PreparedChat, output: GenerationOutput, checks: list[CheckReport]
) -> tuple[GenerationOutput, list[CheckReport], list[dict[str, Any]]]:
    """Keep the best `n` drafts: soft-constraint score first, then mean token log-probability.

    `checks` are the re-checks of `output.choices`; those of the kept drafts are returned with
    them, so no text is checked twice.
    """
    if prepared.drafts <= 1 or prepared.constraint is None:
        return output, checks, []
    constraint = prepared.constraint.constraint
    scored = []
    for c, report in zip(output.choices, checks, strict=True):
        soft = constraint.soft_score(c.text)
        lp = c.score if c.score is not None else float("-inf")
        scored.append((report.ok, soft, lp, c, report))
    ranking = sorted(scored, key=lambda t: (t[0], t[1], t[2]), reverse=True)
    keep = ranking[: prepared.params.n]
    drafts = [
        {
            "draft": c.index,
            "compliant": ok,
            "soft_score": round(soft, 4),
            "mean_logprob": round(lp, 4) if lp != float("-inf") else None,
            "selected": any(k[3] is c for k in keep),
            "text": c.text,
        }
        for ok, soft, lp, c, _ in scored
    ]
    chosen = [replace(k[3], index=i) for i, k in enumerate(keep)]
    return replace(output, choices=chosen), [k[4] for k in keep], drafts


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
    drafts = 1
    if request.constraints is not None:
        resolved = await resolve_phonological(
            state,
            request.constraints,
            request.vocab_lang,
            request.vocab_n_words,
            params.max_new_tokens,
        )
        drafts = choose_drafts(resolved, params, request.drafts)
    else:
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
    if resolved is not None:
        if request.repetition_penalty is None:
            params = replace(params, repetition_penalty=settings.CONSTRAINED_REPETITION_PENALTY)
        resolved.extra.update(
            repetition_penalty=params.repetition_penalty,
            prompt_hint=bool(hint),
        )
    prompt_ids = engine.encode_chat(build_messages(request, hint))
    if len(prompt_ids) > settings.MAX_INPUT_TOKENS:
        raise ContextLengthExceeded(
            f"This model's maximum input length is {settings.MAX_INPUT_TOKENS} tokens; "
            f"your messages resulted in {len(prompt_ids)} tokens",
            param="messages",
        )
    return PreparedChat(request, params, prompt_ids, resolved, model_id, drafts)


def finish_reason(reason: str) -> str:
    """Our internal reasons mapped to OpenAI's (`cancelled` never reaches a client)."""
    return {"cancelled": "stop"}.get(reason, reason)


def build_completion(
    prepared: PreparedChat, output: GenerationOutput, response_id: str | None = None
) -> ChatCompletion:
    checks = []
    if prepared.constraint is not None:
        checks = [prepared.constraint.constraint.check(c.text) for c in output.choices]
    output, checks, drafts = select_drafts(prepared, output, checks)
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
        constraint = prepared.constraint.report(checks)
        errors = [c.error for c in output.choices if c.error]
        if errors:
            constraint["errors"] = errors
        if drafts:
            constraint["drafts"] = drafts
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


def progress_events(prepared: PreparedChat) -> list[dict[str, Any]]:
    """Structured events known before generation (phonological mode, include_events)."""
    if prepared.constraint is None:
        return []
    info = prepared.constraint.constraint.describe()
    if info.get("mode") != "phonological":
        return []
    vocab = info.get("vocabulary", {})
    events = [
        {
            "type": "constraints_resolved",
            "count": len(prepared.request.constraints or []),
            "required_words": info.get("required_words", []),
            "solve_seconds": prepared.constraint.extra.get("solve_seconds"),
            "cache_hit": prepared.constraint.cache_hit,
        },
        {
            "type": "vocabulary_built",
            "allowed": vocab.get("allowed"),
            "survival": vocab.get("survival"),
            "warning": vocab.get("warning"),
        },
    ]
    total = prepared.params.n * prepared.drafts
    events += [{"type": "draft", "draft": i, "status": "queued"} for i in range(total)]
    return events


async def stream_chat(
    state: ServerState, prepared: PreparedChat, log_extra: dict[str, Any]
) -> AsyncIterator[str]:
    """SSE events for one request whose limiter slot is already held.

    The role chunk goes out at once; text follows as the engine releases it (never a partial
    word in wordlist mode, never a possible stop-string prefix); beam search, and drafts that are
    compared at the end, send keep-alive comments until the winner is known. An error after the
    start becomes a final `data: {"error": ...}` event, which the openai SDK raises as an
    APIError. With `stream_options.include_events`, progress events travel as chunks with empty
    `choices` and an `event` object, so the SDK still parses every line.
    """
    engine = state.require_engine()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def on_delta(index: int, text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, text))

    job = prepared.job(on_delta if prepared.drafts == 1 else None)
    rid, created, model = completion_id(), now(), prepared.model_id
    options = prepared.request.stream_options
    include_usage = bool(options and options.include_usage)
    include_events = bool(options and options.include_events)

    def chunk(choices: list[ChunkChoice], **extra: Any) -> str:
        return _sse(
            ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, **extra)
        )

    future = state.submit(engine, [job])
    try:
        for i in range(prepared.params.n):
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
        if include_events:
            for event in progress_events(prepared):
                yield chunk([], event=event)
            if prepared.constraint is not None and prepared.drafts > 1:
                yield chunk([], event={"type": "drafts_generating", "count": job.params.n})
        keepalive = state.settings.STREAM_KEEPALIVE_SECONDS
        getter: asyncio.Future[tuple[int, str]] | None = None
        while True:
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, future}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                index, text = getter.result()
                getter = None
                yield chunk([ChunkChoice(index=index, delta=Delta(content=text))])
            elif future in done:
                getter.cancel()
                getter = None
                while not queue.empty():  # deltas queued before the thread returned
                    index, text = queue.get_nowait()
                    yield chunk([ChunkChoice(index=index, delta=Delta(content=text))])
                break
            else:
                yield ": keep-alive\n\n"
        output = future.result()[0]
        completion = build_completion(prepared, output, rid)
        drafts = (completion.constraint or {}).get("drafts", [])
        if include_events:
            for d in drafts:
                yield chunk(
                    [],
                    event={
                        "type": "draft",
                        "status": "done",
                        **{k: v for k, v in d.items() if k != "text"},
                    },
                )
            if drafts:
                yield chunk(
                    [],
                    event={
                        "type": "selection",
                        "selected": [d["draft"] for d in drafts if d["selected"]],
                    },
                )
        if prepared.drafts > 1:  # the winners' text is known only now
            for c in completion.choices:
                if c.message.content:
                    yield chunk(
                        [ChunkChoice(index=c.index, delta=Delta(content=c.message.content))]
                    )
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
