"""Text completions as a service: raw prompts -> token ids -> chat's pipeline -> `text_completion`.

A prompt is used as raw text: its token ids are the tokenizer's encoding of it (no special
tokens added), after the tokenizer's BOS token when it has one and the prompt does not already
begin with it (SmolLM2: `<|im_start|>`), so that every token of the prompt has something before
it. Generation is chat's (`services.chat.prepare_prompts`: the same checks, admission,
constraint, drafts and re-check); each prompt is one generation job, and its choices are indexed
prompt-major (`prompt_index * n + j`), as OpenAI does.

`echo` returns the prompt before the completion; with `logprobs` its tokens are scored by one
forward pass per prompt (`Engine.score`, on the scheduler's thread): the first token has a null
log-probability (nothing precedes it), every other its log-probability given all before it. The
passes hold one row of admission as `/v1/score`'s do (a stream: the rows it already holds; a batch
item: the worker's turn). Generated tokens carry the log-probabilities they were decoded with
(`TokenLogprob.logprob`: after penalties and the vocabulary mask), as chat's logprobs do.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.base import Engine
from ..engine.logprobs import TokenPieces
from ..engine.params import GenerationOutput, ScoreOutput, TokenLogprob
from ..errors import GenerationFailed, InvalidRequest
from ..protocol.completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    TextCompletion,
    TextCompletionChunk,
)
from ..protocol.responses import Usage, finite_logprob, now
from .chat import PreparedChat, check_input_length, finish_reason, prepare_prompts, settle
from .limiter import SlotLease
from .scoring import encode_text
from .state import ServerState
from .streaming import stream_chat

log = logging.getLogger(__name__)


def text_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


@dataclass
class Prompt:
    """One prompt as sent, its token ids and each token's characters in it."""

    text: str
    ids: list[int]
    #: (start, end) of each token in `text`; (0, 0) for a BOS token added before it.
    spans: list[tuple[int, int]]


@dataclass
class PreparedCompletion:
    """A validated text completion request: one prepared generation per prompt."""

    request: CompletionRequest
    prompts: list[Prompt]
    jobs: list[PreparedChat]

    @property
    def first(self) -> PreparedChat:
        return self.jobs[0]

    @property
    def generates(self) -> bool:
        """False for `max_tokens: 0` (with echo): the prompt alone is returned."""
        return self.first.params.max_new_tokens > 0

    @property
    def rows(self) -> int:
        return sum(job.rows for job in self.jobs)


def encode_prompt(tokenizer: Any, text: str, param: str) -> Prompt:
    """The prompt's token ids (see the module's docstring). Blocking."""
    ids, spans = encode_text(tokenizer, text)
    if spans is None:  # a tokenizer without offsets: each token's text, one after another
        spans, at = [], 0
        for token in ids:
            piece = len(tokenizer.decode([token]))
            spans.append((min(at, len(text)), min(at + piece, len(text))))
            at += piece
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids, spans = [bos, *ids], [(0, 0), *spans]
    if not ids:
        raise InvalidRequest("the prompt has no tokens", param=param)
    return Prompt(text, ids, spans)


async def prepare_completion(
    state: ServerState, request: CompletionRequest, *, admission: bool = False
) -> PreparedCompletion:
    """Every check that can fail before generation starts (so errors are plain 4xx JSON)."""
    settings = state.settings
    params = request.to_params(settings)
    prompts: list[Prompt] = []

    def encode() -> list[list[int]]:
        tokenizer = state.require_engine().tokenizer
        for text, param in zip(request.prompts(), request.prompt_params(), strict=True):
            prompt = encode_prompt(tokenizer, text, param)
            check_input_length(settings, len(prompt.ids), param, "your prompt")
            prompts.append(prompt)
        return [p.ids for p in prompts]

    jobs = await prepare_prompts(state, request, params, encode, admission=admission)
    return PreparedCompletion(request, prompts, jobs)


class LegacyLogprobs:
    """OpenAI's legacy `logprobs` object of one choice, built token by token: the echoed prompt's
    tokens (`add_prompt`), then generated ones, from the engine's entries (`add_generated`) or
    from a streamed chat chunk's (`add_streamed`); `take` returns what was added since the last
    call, so a stream sends each chunk's own tokens.

    Token texts are `TokenPieces`' (as chat's logprobs: a token that is not whole UTF-8 on its own
    shows its bytes escaped). A generated token's `text_offset` is the number of complete
    characters of the text before it (`base`, the echoed prompt's length, then the generated
    tokens' bytes so far, decoded).
    """

    def __init__(self, pieces: TokenPieces, base: int = 0) -> None:
        self.pieces = pieces
        self.at = base
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._clear()

    def _clear(self) -> None:
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []

    def _add(
        self, token: str, logprob: float | None, top: dict[str, float] | None, offset: int
    ) -> None:
        self.tokens.append(token)
        self.text_offset.append(offset)
        if logprob is None:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
            return
        self.token_logprobs.append(finite_logprob(logprob))
        top = dict(top or {})
        top.setdefault(token, finite_logprob(logprob))  # the returned token is always listed
        self.top_logprobs.append(top)

    def _advance(self, data: bytes) -> int:
        offset = self.at
        self.at += len(self._decoder.decode(data))
        return offset

    def add_prompt(self, prompt: Prompt, score: ScoreOutput | None) -> None:
        """The prompt's tokens: the first with null, the rest as `score` read them."""
        for i, (token, (start, _)) in enumerate(zip(prompt.ids, prompt.spans, strict=True)):
            text = self.pieces(token)[0]
            if i == 0 or score is None:
                self._add(text, None, None, start)
                continue
            top = {}
            if score.top_ids:
                for alt, value in zip(score.top_ids[i - 1], score.top_logprobs[i - 1], strict=True):
                    top.setdefault(self.pieces(alt)[0], finite_logprob(value))
            self._add(text, score.logprobs[i - 1], top, start)

    def add_generated(self, entries: Sequence[TokenLogprob]) -> None:
        for entry in entries:
            text, data = self.pieces(entry.id)
            top: dict[str, float] = {}
            for alt, value in entry.top:
                top.setdefault(self.pieces(alt)[0], finite_logprob(value))
            self._add(text, entry.logprob, top, self._advance(data))

    def add_streamed(self, content: Sequence[dict[str, Any]]) -> None:
        """A chat chunk's `logprobs.content` entries (already OpenAI-shaped and finite)."""
        for entry in content:
            top: dict[str, float] = {}
            for alt in entry["top_logprobs"]:
                top.setdefault(alt["token"], alt["logprob"])
            offset = self._advance(bytes(entry["bytes"] or b""))
            self._add(entry["token"], entry["logprob"], top, offset)

    def take(self) -> CompletionLogprobs:
        taken = CompletionLogprobs(
            tokens=self.tokens,
            token_logprobs=self.token_logprobs,
            top_logprobs=self.top_logprobs,
            text_offset=self.text_offset,
        )
        self._clear()
        return taken


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One `constraint` object for several prompts: what was enforced (the same for all), and the
    re-checks of every returned text together."""
    merged = dict(reports[0])
    merged["violations"] = sorted({v for r in reports for v in r["violations"]})
    merged["compliant"] = all(r["compliant"] for r in reports)
    for key in ("checks", "errors", "drafts"):
        items = [item for r in reports for item in r.get(key, [])]
        if items:
            merged[key] = items
    return merged


def build_completion(
    engine: Engine,
    prepared: PreparedCompletion,
    outputs: list[GenerationOutput] | None,
    scores: list[ScoreOutput | None],
    response_id: str | None = None,
) -> TextCompletion:
    """The `text_completion` body: choices prompt-major, echo and logprobs as asked. Blocking
    (decoding tokens, re-checking words)."""
    request = prepared.request
    n = prepared.first.params.n
    pieces = None
    if request.logprobs is not None:
        pieces = prepared.first.pieces or TokenPieces(engine.tokenizer)
    choices: list[CompletionChoice] = []
    reports: list[dict[str, Any]] = []
    completion_tokens = 0
    for p, (prompt, job) in enumerate(zip(prepared.prompts, prepared.jobs, strict=True)):
        settled: GenerationOutput | None = None
        if outputs is not None:
            settled, report = settle(job, outputs[p])
            completion_tokens += settled.completion_tokens
            if report is not None:
                reports.append(report)
        returned = settled.choices if settled is not None else []
        for j in range(n):
            generated = returned[j] if j < len(returned) else None
            echo = prompt.text if request.echo else ""
            text = echo + (generated.text if generated else "")
            logprobs = None
            if pieces is not None:
                builder = LegacyLogprobs(pieces, len(echo))
                if request.echo:
                    builder.add_prompt(prompt, scores[p])
                if generated is not None:
                    builder.add_generated(generated.token_logprobs or [])
                logprobs = builder.take()
            choices.append(
                CompletionChoice(
                    index=p * n + j,
                    text=text,
                    logprobs=logprobs,
                    finish_reason=finish_reason(generated.finish_reason) if generated else "length",
                )
            )
    prompt_tokens = sum(len(prompt.ids) for prompt in prepared.prompts)
    return TextCompletion(
        id=response_id or text_completion_id(),
        created=now(),
        model=prepared.first.model_id,
        choices=choices,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        constraint=merge_reports(reports) if reports else None,
    )


def echo_scores(engine: Engine, prepared: PreparedCompletion) -> list[ScoreOutput | None]:
    """Each prompt's tokens after its first, one forward pass per prompt, when the request echoes
    them with logprobs (else None for each). Blocking."""
    request = prepared.request
    if not request.echo or request.logprobs is None:
        return [None] * len(prepared.prompts)
    return [
        engine.score(p.ids[:1], p.ids[1:], request.logprobs) if len(p.ids) > 1 else None
        for p in prepared.prompts
    ]


async def score_echo(state: ServerState, prepared: PreparedCompletion) -> list[ScoreOutput | None]:
    """`echo_scores` in a thread, holding one row of admission until the passes have really
    finished (as `/v1/score` does)."""
    request = prepared.request
    if not request.echo or request.logprobs is None:
        return [None] * len(prepared.prompts)
    engine, limiter = state.require_engine(), state.limiter
    assert limiter is not None
    rows = await limiter.acquire(1)
    try:
        work = asyncio.ensure_future(asyncio.to_thread(echo_scores, engine, prepared))
    except BaseException:
        limiter.release(rows)
        raise
    work.add_done_callback(lambda _: limiter.release(rows))
    return await asyncio.shield(work)


async def create_completion(
    state: ServerState,
    prepared: PreparedCompletion,
    is_disconnected: Callable[[], Any] | None = None,
    log_extra: dict[str, Any] | None = None,
) -> TextCompletion | None:
    """Generate (unless `max_tokens` is 0), score the echoed prompts if asked, build the body;
    None when the client left before its request started."""
    extra = log_extra if log_extra is not None else {}
    outputs = None
    scores: list[ScoreOutput | None] = [None] * len(prepared.prompts)
    if prepared.generates:
        outputs = await state.run_generation(
            [job.job() for job in prepared.jobs], is_disconnected
        )
        extra.update(
            completion_tokens=sum(o.completion_tokens for o in outputs),
            gen_seconds=round(max(o.seconds for o in outputs), 3),
        )
    if outputs is not None and any(o.cancelled for o in outputs):
        extra.update(outcome="client_disconnected")
        if all(not o.choices for o in outputs):
            return None  # left while queued: nobody reads an answer
    else:  # nobody reads the prompt's scores of a client that left
        scores = await score_echo(state, prepared)
    engine = state.require_engine()
    return await asyncio.to_thread(build_completion, engine, prepared, outputs, scores)


def _sse(chunk: TextCompletionChunk) -> str:
    return f"data: {json.dumps(chunk.model_dump(), ensure_ascii=False)}\n\n"


class ChunkRewriter:
    """Chat chunks of one prompt's stream rewritten as `text_completion` chunks: each choice's
    first chunk carries the echoed prompt (and its logprobs), the others their text, with the
    logprobs of the tokens they complete in the legacy shape."""

    def __init__(
        self, rid: str, prepared: PreparedCompletion, score: ScoreOutput | None, engine: Engine
    ) -> None:
        self.rid = rid
        self.prompt = prepared.prompts[0]
        self.echo = self.prompt.text if prepared.request.echo else ""
        self.score = score
        self.pieces = None
        if prepared.request.logprobs is not None:
            self.pieces = prepared.first.pieces or TokenPieces(engine.tokenizer)
        self.logprobs: dict[int, LegacyLogprobs] = {}

    def choice(
        self, index: int, chat: dict[str, Any] | None, finish: str | None
    ) -> CompletionChoice:
        """One choice of a chunk: its first (the echo) when `chat` is None."""
        logprobs = None
        if self.pieces is not None:
            builder = self.logprobs.get(index)
            if builder is None:
                builder = self.logprobs[index] = LegacyLogprobs(self.pieces, len(self.echo))
                if self.echo:
                    builder.add_prompt(self.prompt, self.score)
            if chat is not None and chat.get("logprobs"):
                builder.add_streamed(chat["logprobs"]["content"] or [])
            logprobs = builder.take()
        text = self.echo if chat is None else (chat["delta"].get("content") or "")
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)

    def rewrite(self, payload: dict[str, Any]) -> str:
        choices = [
            self.choice(c["index"], None if c["delta"].get("role") else c, c["finish_reason"])
            for c in payload["choices"]
        ]
        chunk = TextCompletionChunk(
            id=self.rid,
            created=payload["created"],
            model=payload["model"],
            choices=choices,
            usage=payload.get("usage"),
            constraint=payload.get("constraint"),
            event=payload.get("event"),
        )
        return _sse(chunk)

    def prompt_only(self, prepared: PreparedCompletion) -> str:
        """The whole stream of an echo-only request (`max_tokens: 0`) but its [DONE]."""
        created, model = now(), prepared.first.model_id
        events = [
            _sse(
                TextCompletionChunk(
                    id=self.rid,
                    created=created,
                    model=model,
                    choices=[self.choice(j, None, "length")],
                )
            )
            for j in range(prepared.first.params.n)
        ]
        options = prepared.request.stream_options
        if options is not None and options.include_usage:
            tokens = len(self.prompt.ids)
            usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
            events.append(
                _sse(
                    TextCompletionChunk(
                        id=self.rid, created=created, model=model, choices=[], usage=usage
                    )
                )
            )
        return "".join(events)


async def stream_completion(
    state: ServerState, prepared: PreparedCompletion, log_extra: dict[str, Any], lease: SlotLease
) -> AsyncIterator[str]:
    """SSE `text_completion` chunks for one prompt, then `data: [DONE]`.

    Generation streams through chat's SSE service (`stream_chat`: text as it is released, beams
    and drafts at the end, keep-alives, errors as a final `{"error": ...}` event), each chat chunk
    rewritten (`ChunkRewriter`). An echoed prompt's logprobs are read first, under the rows the
    stream already holds.
    """
    engine = state.require_engine()
    try:
        [score] = await asyncio.to_thread(echo_scores, engine, prepared)
    except Exception:
        log.exception("scoring an echoed prompt failed")
        error = GenerationFailed("scoring the prompt failed; see the server log").body()
        yield f"data: {json.dumps(error)}\n\n"
        log_extra.update(outcome="error:generation_failed")
        return
    rewriter = ChunkRewriter(text_completion_id(), prepared, score, engine)
    if not prepared.generates:
        yield rewriter.prompt_only(prepared)
        yield "data: [DONE]\n\n"
        lease.release()
        log_extra.update(outcome="ok")
        return
    async for event in stream_chat(state, prepared.first, log_extra, lease):
        if not event.startswith("data: {"):  # keep-alive comments and [DONE]
            yield event
            continue
        payload = json.loads(event[len("data: ") :])
        yield event if "choices" not in payload else rewriter.rewrite(payload)  # or an error
