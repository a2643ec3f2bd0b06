"""Chat completions as a service: request model -> spec + params -> constraint -> engine -> response.

Shared by the chat router (JSON and SSE) and the batch worker, so both build identical responses;
text completions enter through `prepare_prompts` (prompts as token ids, no template) and take the
same checks, constraint and drafts. Everything that can fail before generation starts happens in
`prepare_generation`, so those errors are plain 4xx JSON; blocking work (compiling, tokenizing)
runs in threads.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..engine.logprobs import TokenPieces
from ..engine.params import (
    GenerationJob,
    GenerationOutput,
    LogprobsCallback,
    SamplingParams,
    TokenLogprob,
)
from ..errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from ..protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ResponseMessage,
    Usage,
    completion_id,
    now,
)
from ..protocol.completions import CompletionRequest
from ..protocol.limits import check_work
from ..protocol.responses import ChoiceLogprobs, TokenLogprobEntry, TopLogprob, finite_logprob
from ..settings import Settings
from .constraints import ResolvedConstraint, resolve
from .drafts import choose_drafts, draft_params, select_drafts
from .state import ServerState


@dataclass
class PreparedChat:
    """A validated request, ready to generate."""

    request: ChatCompletionRequest | CompletionRequest
    params: SamplingParams
    prompt_ids: list[int]
    constraint: ResolvedConstraint | None
    model_id: str
    #: Candidates per returned choice, the best kept (`services.drafts`).
    drafts: int = 1
    #: Temperature of the sampled drafts of a greedy request.
    draft_temperature: float = 0.5
    #: Token texts and bytes for `logprobs` (only when the request asks for them).
    pieces: TokenPieces | None = None

    @property
    def job_params(self) -> SamplingParams:
        """What the engine runs: n x drafts rows (sampled drafts for a greedy request)."""
        return draft_params(self.params, self.drafts, self.draft_temperature)

    @property
    def rows(self) -> int:
        """Rows the scheduler decodes for this request (choices x drafts, or beams)."""
        return self.job_params.rows

    def job(
        self,
        on_delta: Callable[[int, str], None] | None = None,
        on_logprobs: LogprobsCallback | None = None,
    ) -> GenerationJob:
        return GenerationJob(
            prompt_ids=self.prompt_ids,
            params=self.job_params,
            constraint=self.constraint.constraint if self.constraint else None,
            on_delta=on_delta,
            on_logprobs=on_logprobs,
        )

    def logprobs(self, entries: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
        """OpenAI's `logprobs` object of a choice (or of a streamed chunk's tokens); None when
        the request did not ask for them."""
        if self.pieces is None or entries is None:
            return None
        return choice_logprobs(entries, self.pieces)


def choice_logprobs(entries: list[TokenLogprob], pieces: TokenPieces) -> ChoiceLogprobs:
    """Engine entries as OpenAI shapes them; minus infinity is sent as -9999.0."""

    def top(token_id: int, logprob: float) -> TopLogprob:
        text, data = pieces(token_id)
        return TopLogprob(token=text, logprob=finite_logprob(logprob), bytes=list(data))

    content = []
    for e in entries:
        text, data = pieces(e.id)
        content.append(
            TokenLogprobEntry(
                token=text,
                logprob=finite_logprob(e.logprob),
                bytes=list(data),
                top_logprobs=[top(i, lp) for i, lp in e.top],
                logprob_unconstrained=(
                    None if math.isnan(e.raw_logprob) else finite_logprob(e.raw_logprob)
                ),
            )
        )
    return ChoiceLogprobs(content=content)


def check_model(state: ServerState, name: str, param: str = "model") -> str:
    engine = state.require_engine()
    accepted = {engine.model_id, *state.settings.MODEL_ALIASES}
    if name not in accepted:
        raise ModelNotFound(
            f"The model '{name}' does not exist; this server serves '{engine.model_id}'",
            param=param,
        )
    return engine.model_id


#: Characters of a chat below which its template and tokens are computed on the event loop: a
#: chat prompt of a few hundred tokens takes ~0.2 ms, less than handing it to a worker thread
#: and back costs while the scheduler thread is decoding (a burst of requests waits for each).
INLINE_ENCODE_CHARS = 8192


async def encode_messages(engine: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids; a long one is encoded in a worker thread, so that it does not
    hold up the event loop."""
    if sum(len(m["content"]) for m in messages) < INLINE_ENCODE_CHARS:
        return engine.encode_chat(messages)
    return await asyncio.to_thread(engine.encode_chat, messages)


def build_messages(request: ChatCompletionRequest, hint: str | None) -> list[dict[str, str]]:
    messages = [{"role": m.template_role(), "content": m.text()} for m in request.messages]
    if hint:
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}
        else:
            messages.insert(0, {"role": "system", "content": hint})
    return messages


async def prepare_chat(
    state: ServerState, request: ChatCompletionRequest, *, admission: bool = False
) -> PreparedChat:
    """Every check that can fail before generation starts (so errors are plain 4xx JSON).

    With `admission` (chat), a request that would be refused a place in the generation queue is
    refused now, before its constraint is compiled or its prompt tokenized, and a compilation
    waits in the bounded work gate; without it (batch items) compilations wait their turn.
    """
    settings = state.settings
    prepared = await prepare_generation(
        state,
        request,
        request.to_params(settings),
        admission=admission,
        prompt_hint=request.vocab_prompt_hint,
    )
    hint = None
    resolved = prepared.constraint
    if resolved is not None:
        use_hint = (
            request.vocab_prompt_hint
            if request.vocab_prompt_hint is not None
            else settings.CONSTRAINT_PROMPT_HINT
        )
        hint = resolved.constraint.prompt_hint() if use_hint else None
        resolved.extra.update(prompt_hint=bool(hint))
    engine = state.require_engine()
    prepared.prompt_ids = await encode_messages(engine, build_messages(request, hint))
    check_input_length(settings, len(prepared.prompt_ids), "messages", "your messages")
    check_context(engine.context_limit(), len(prepared.prompt_ids), prepared.params, "messages")
    return prepared


async def prepare_prompts(
    state: ServerState,
    request: CompletionRequest,
    params: SamplingParams,
    encode: Callable[[], list[list[int]]],
    *,
    admission: bool = False,
) -> list[PreparedChat]:
    """The entry point for prompts given as token ids (`/v1/completions`): the checks, constraint
    and drafts of a chat request, one `PreparedChat` per prompt, all sharing the constraint.

    `encode` gives the prompts' ids (blocking, and it checks their length): it runs in a thread
    once the request is admitted and its constraint compiled, as chat's template does. No
    vocabulary hint: a raw prompt has no system message to carry one.
    """
    prepared = await prepare_generation(
        state, request, params, admission=admission, prompts=len(request.prompts())
    )
    prompt_ids = await asyncio.to_thread(encode)
    limit = state.require_engine().context_limit()
    for ids in prompt_ids:
        check_context(limit, len(ids), prepared.params, "prompt")
    return [replace(prepared, prompt_ids=ids) for ids in prompt_ids]


async def prepare_generation(
    state: ServerState,
    request: ChatCompletionRequest | CompletionRequest,
    params: SamplingParams,
    *,
    admission: bool,
    prompts: int = 1,
    prompt_hint: bool | None = None,
) -> PreparedChat:
    """The checks, constraint and drafts of a request, before its prompt: a `PreparedChat` whose
    `prompt_ids` the caller fills. Admission counts `prompts` times the request's rows."""
    settings = state.settings
    model_id = check_model(state, request.model)
    if admission:
        assert state.limiter is not None
        state.limiter.check(params.rows * prompts)
    spec = request.to_spec()
    if spec is None:
        choose_drafts(None, params, request.drafts, settings.MAX_DRAFTS)  # 400 unless 1 or unset
    if prompt_hint is not None and spec is None:
        raise InvalidRequest(
            "vocab_prompt_hint only applies with vocab_lang/vocab_n_words",
            param="vocab_prompt_hint",
        )
    resolved = await resolve(state, spec, params.max_new_tokens, wait=not admission)
    engine = state.require_engine()
    engine.check_request(params, resolved.constraint if resolved else None)
    drafts = 1
    if resolved is not None:
        drafts = choose_drafts(resolved.constraint, params, request.drafts, settings.MAX_DRAFTS)
        check_draft_work(settings, params, drafts)
        if request.repetition_penalty is None:
            params = replace(params, repetition_penalty=settings.CONSTRAINED_REPETITION_PENALTY)
        resolved.extra.update(repetition_penalty=params.repetition_penalty)
        enforcement = engine.enforcement(resolved.constraint)
        if enforcement is not None:
            resolved.extra.update(enforcement=enforcement)
    pieces = None
    if params.logprobs is not None:
        pieces = TokenPieces(engine.tokenizer)
    return PreparedChat(
        request, params, [], resolved, model_id, drafts, settings.DRAFT_TEMPERATURE, pieces
    )


def check_input_length(settings: Settings, tokens: int, param: str, what: str) -> None:
    if tokens > settings.MAX_INPUT_TOKENS:
        raise ContextLengthExceeded(
            f"This model's maximum input length is {settings.MAX_INPUT_TOKENS} tokens; "
            f"{what} resulted in {tokens} tokens",
            param=param,
        )


def check_context(limit: int | None, tokens: int, params: SamplingParams, param: str) -> None:
    """Prompt + max_tokens within the engine's context (`Engine.context_limit`), if it has one."""
    if limit is not None and tokens + params.max_new_tokens > limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens; the prompt has {tokens} "
            f"tokens and max_tokens is {params.max_new_tokens}: shorten one of them",
            param=param if tokens >= limit else "max_tokens",
        )


def check_draft_work(settings: Settings, params: SamplingParams, drafts: int) -> None:
    """n x drafts x max_tokens within MAX_WORK_TOKENS (beams already count their drafts)."""
    if drafts == 1 or params.mode == "beam":
        return
    factors = {"n": params.n, "drafts": drafts, "max_tokens": params.max_new_tokens}
    check_work(settings, factors, "drafts")


def finish_reason(reason: str) -> str:
    """Our internal reasons mapped to OpenAI's (`cancelled` never reaches a client)."""
    return {"cancelled": "stop"}.get(reason, reason)


def settle(
    prepared: PreparedChat, output: GenerationOutput
) -> tuple[GenerationOutput, dict[str, Any] | None]:
    """The choices a request returns (the best draft of each) and its `constraint` report: the
    independent re-check of each returned text (None when unconstrained)."""
    resolved = prepared.constraint
    if resolved is None:
        return output, None
    checks = [resolved.constraint.check(c.text) for c in output.choices]
    drafts = []
    if prepared.drafts > 1:
        output, checks, drafts = select_drafts(
            resolved.constraint, prepared.params.n, output, checks
        )
    constraint = resolved.report(checks)
    errors = [c.error for c in output.choices if c.error]
    if errors:
        constraint["errors"] = errors
    if drafts:
        constraint["drafts"] = drafts
    return output, constraint


def build_completion(
    prepared: PreparedChat, output: GenerationOutput, response_id: str | None = None
) -> ChatCompletion:
    output, constraint = settle(prepared, output)
    choices = [
        Choice(
            index=c.index,
            message=ResponseMessage(content=c.text),
            finish_reason=finish_reason(c.finish_reason),
            logprobs=prepared.logprobs(c.token_logprobs),
        )
        for c in output.choices
    ]
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
