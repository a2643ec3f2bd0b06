"""Server-sent events for one chat request: role chunk, text as it is released, progress events,
the final chunk with the constraint report, usage, [DONE]."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from ..engine.params import TokenLogprob
from ..errors import ApiError, GenerationFailed
from ..protocol import ChatCompletionChunk, ChunkChoice, Delta, completion_id, now
from .chat import PreparedChat, build_completion
from .limiter import SlotLease
from .state import ServerState

log = logging.getLogger(__name__)


def _sse(payload: Any) -> str:
    if isinstance(payload, BaseModel):
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
            "solve_seconds": info.get("solve_seconds"),
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
    state: ServerState, prepared: PreparedChat, log_extra: dict[str, Any], lease: SlotLease
) -> AsyncIterator[str]:
    """SSE events for one request whose limiter slot is held by `lease`.

    The role chunk goes out at once; text follows as the engine releases it (never a partial
    word in wordlist mode, never a possible stop-string prefix); beam search, and drafts that are
    compared at the end, send keep-alive comments until the winner is known. An error after the
    start becomes a final `data: {"error": ...}` event, which the openai SDK raises as an
    APIError. With `stream_options.include_events`, progress events travel as chunks with empty
    `choices` and an `event` object, so the SDK still parses every line.
    """
    loop = asyncio.get_running_loop()
    # (choice, text delta) or (choice, token logprobs that go with that choice's next delta)
    queue: asyncio.Queue[tuple[int, str | list[TokenLogprob]]] = asyncio.Queue()

    def on_delta(index: int, text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, text))

    def on_logprobs(index: int, entries: list[TokenLogprob]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, entries))

    live = prepared.drafts == 1  # drafts are compared at the end: their text comes then
    job = prepared.job(
        on_delta if live else None,
        on_logprobs if live and prepared.pieces is not None else None,
    )
    #: Per choice, token logprobs waiting for their text (or, at the end, the finish chunk).
    pending: dict[int, list[TokenLogprob]] = {}
    rid, created, model = completion_id(), now(), prepared.model_id
    options = prepared.request.stream_options
    include_usage = bool(options and options.include_usage)
    include_events = bool(options and options.include_events)

    def chunk(choices: list[ChunkChoice], **extra: Any) -> str:
        return _sse(
            ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, **extra)
        )

    def delta(item: tuple[int, str | list[TokenLogprob]]) -> str | None:
        """The chunk of a text delta, with the logprobs of the tokens it completes; logprobs
        alone wait for their text."""
        index, value = item
        if not isinstance(value, str):
            pending.setdefault(index, []).extend(value)
            return None
        logprobs = prepared.logprobs(pending.pop(index, []))
        return chunk([ChunkChoice(index=index, delta=Delta(content=value), logprobs=logprobs)])

    try:
        future = state.submit([job], lease.rows)
    finally:
        lease.hand_over()  # the generation now releases the slot (or submit already did)
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
                sse = delta(getter.result())
                getter = None
                if sse is not None:
                    yield sse
            elif future in done:
                getter.cancel()
                getter = None
                while not queue.empty():  # deltas queued before the thread returned
                    sse = delta(queue.get_nowait())
                    if sse is not None:
                        yield sse
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
        if not live:  # the winners' text is known only now
            for c in completion.choices:
                if c.message.content or c.logprobs is not None:
                    yield chunk(
                        [
                            ChunkChoice(
                                index=c.index,
                                delta=Delta(content=c.message.content),
                                logprobs=c.logprobs,
                            )
                        ]
                    )
        for c in completion.choices:
            last = c.index == completion.choices[-1].index
            rest = pending.pop(c.index, None)  # tokens whose text was cut at the end
            yield chunk(
                [
                    ChunkChoice(
                        index=c.index,
                        delta=Delta(),
                        finish_reason=c.finish_reason,
                        logprobs=prepared.logprobs(rest) if rest else None,
                    )
                ],
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
            state.cancel([job])
