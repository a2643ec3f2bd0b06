"""Uploaded inputs -> items -> prepared requests, with errors that say where in the upload.

The job API's file is a JSON array of chat requests; OpenAI's is JSONL, one
`{custom_id, method, url, body}` per line, whose `url` is the batch's endpoint: chat completions
or text completions (`BATCH_ENDPOINTS`). Each item is then checked exactly as its route checks a
request (plus the batch rules), at upload and again by the worker (a word list may be gone since).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from ..errors import ApiError, InvalidRequest, validation_error
from ..protocol import ChatCompletionRequest
from ..protocol.completions import CompletionRequest
from ..protocol.screen import screen
from ..services import chat as completions
from ..services.completions import PreparedCompletion, prepare_completion
from ..services.state import ServerState
from .params import JOB_WIDE_FIELDS, JobParams
from .records import BatchItem, JobKind

BATCH_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
#: The routes an OpenAI batch may run (the job API runs chat requests only).
BATCH_ENDPOINTS = (BATCH_ENDPOINT, COMPLETIONS_ENDPOINT)

#: An item ready to run: a chat request, or a text completion (one generation per prompt).
PreparedItem = completions.PreparedChat | PreparedCompletion

#: While preparing an upload, give other requests a turn at least this often (items).
YIELD_EVERY = 32


def locate(exc: ApiError, label: str, param_prefix: str, **extra: Any) -> ApiError:
    """Prefix an error raised while checking one item with where that item is in the upload."""
    exc.message = f"{label}: {exc.message}"
    exc.param = f"{param_prefix}.{exc.param}" if exc.param else param_prefix
    exc.extra.update(extra)
    return exc


@contextmanager
def _located(label: str, param_prefix: str, **extra: Any) -> Iterator[None]:
    try:
        yield
    except ApiError as exc:
        locate(exc, label, param_prefix, **extra)
        raise


def loads(data: bytes | str, what: str, param: str, **extra: Any) -> Any:
    """`json.loads` whose every failure is a 400 naming `param`: invalid JSON, and nesting deep
    enough to exhaust the parser's recursion (a few thousand `[`) alike."""
    try:
        return json.loads(data)
    except ValueError as exc:
        message = f"{what} is not valid JSON: {exc}"
    except RecursionError:
        message = f"{what} nests arrays or objects too deeply to be a request"
    raise InvalidRequest(message, param=param, code="invalid_json", extra=extra or None)


def parse_job_upload(data: bytes, max_items: int) -> list[Any]:
    """The job API's file: a non-empty JSON array of at most `max_items` requests."""
    items = loads(data, "the uploaded file", "file")
    if not isinstance(items, list):
        raise InvalidRequest(
            "the uploaded file must be a JSON array of chat completion requests", param="file"
        )
    if not items:
        raise InvalidRequest("the uploaded file holds no requests (empty array)", param="file")
    if len(items) > max_items:
        raise InvalidRequest(
            f"the uploaded file holds {len(items)} requests; at most {max_items} are allowed "
            "per job (BATCH_MAX_ITEMS)",
            param="file",
        )
    return items


def parse_jsonl(data: bytes, max_items: int) -> list[tuple[int, Any]]:
    """(line number, value) for every non-blank line of a JSONL file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the file is not UTF-8 text", param="file") from None
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        value = loads(line, f"line {number}", "file", line=number)
        try:
            screen(value, f"line[{number}]", field_depth=2)
        except ApiError as exc:  # its param already says where: line[n].body...
            exc.message = f"line {number}: {exc.message}"
            exc.extra["line"] = number
            raise
        out.append((number, value))
    if not out:
        raise InvalidRequest("the file holds no requests", param="file")
    if len(out) > max_items:
        raise InvalidRequest(
            f"the file holds {len(out)} requests; at most {max_items} are allowed per batch "
            "(BATCH_MAX_ITEMS)",
            param="file",
        )
    return out


def parse_batch_lines(lines: list[tuple[int, Any]], endpoint: str) -> list[BatchItem]:
    """OpenAI batch input lines -> items; structure and duplicate custom_ids are refused here."""
    seen: dict[str, int] = {}
    items = []
    for index, (number, line) in enumerate(lines):
        with _located(f"line {number}", f"line[{number}]", line=number):
            if not isinstance(line, dict):
                raise InvalidRequest("each line must be a JSON object")
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                raise InvalidRequest("custom_id must be a non-empty string", param="custom_id")
            if custom_id in seen:
                raise InvalidRequest(
                    f"duplicate custom_id {custom_id!r} (first used on line {seen[custom_id]}); "
                    "custom_ids must be unique within a batch",
                    param="custom_id",
                    code="duplicate_custom_id",
                )
            seen[custom_id] = number
            if line.get("method", "POST") != "POST":
                raise InvalidRequest("method must be POST", param="method")
            if line.get("url") != endpoint:
                raise InvalidRequest(f"url must be the batch's endpoint {endpoint!r}", param="url")
            if not isinstance(line.get("body"), dict):
                raise InvalidRequest("body must be a JSON object", param="body")
        items.append(BatchItem(index=index, body=line["body"], custom_id=custom_id))
    return items


def parse_batch_file(data: bytes, endpoint: str, max_items: int) -> list[tuple[int, BatchItem]]:
    """An OpenAI batch input as (line number, item) pairs, every line's structure checked."""
    lines = parse_jsonl(data, max_items)
    items = parse_batch_lines(lines, endpoint)
    return [(number, item) for (number, _), item in zip(lines, items, strict=True)]


def load_items(kind: JobKind, data: bytes, endpoint: str = BATCH_ENDPOINT) -> list[BatchItem]:
    """A stored input (already validated at upload) back into items, for the worker. Blocking."""
    if kind == "job":
        return [BatchItem(index=i, body=body) for i, body in enumerate(json.loads(data))]
    lines = [
        (n, json.loads(line))
        for n, line in enumerate(data.decode("utf-8-sig").splitlines(), 1)
        if line.strip()
    ]
    return parse_batch_lines(lines, endpoint)


def validate_item(
    body: Any, params: JobParams | None, endpoint: str = BATCH_ENDPOINT
) -> ChatCompletionRequest | CompletionRequest:
    """The synchronous half of `prepare_item`: the request model and the batch rules.

    `params` is the job API's job-wide override (its fields in the item are ignored); OpenAI
    batch lines pass None and keep their own parameters, and `endpoint` says which request they
    hold (the job API's items are chat requests).
    """
    text = endpoint == COMPLETIONS_ENDPOINT
    if not isinstance(body, dict):
        kind = "text" if text else "chat"
        raise InvalidRequest(f"must be a JSON object (a {kind} completion request)")
    if params is not None:
        if body.get("constraints") is not None:
            # Like the vocabulary, phonological constraints are job-wide in the job API (the
            # `constraints` query parameter or form field); OpenAI batch lines keep theirs.
            raise InvalidRequest(
                "in a job, phonological constraints are job-wide: send them as the "
                "`constraints` form field (or query parameter), not per item",
                param="constraints",
            )
        body = {k: v for k, v in body.items() if k not in JOB_WIDE_FIELDS}
    model = CompletionRequest if text else ChatCompletionRequest
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    if request.stream:
        raise InvalidRequest("stream is not available in a batch", param="stream")
    if params is not None:
        assert isinstance(request, ChatCompletionRequest)
        request = params.apply(request)
    return request


async def prepare_item(
    state: ServerState, body: Any, params: JobParams | None, endpoint: str = BATCH_ENDPOINT
) -> PreparedItem:
    """One request of a batch, checked exactly as its route checks it (plus the batch rules)."""
    return await _prepare(state, validate_item(body, params, endpoint))


async def _prepare(
    state: ServerState, request: ChatCompletionRequest | CompletionRequest
) -> PreparedItem:
    if isinstance(request, CompletionRequest):
        return await prepare_completion(state, request)
    return await completions.prepare_chat(state, request)


def _validate_all(
    bodies: Sequence[Any], params: JobParams | None, endpoint: str
) -> list[ChatCompletionRequest | CompletionRequest | ApiError]:
    out: list[ChatCompletionRequest | CompletionRequest | ApiError] = []
    for body in bodies:
        try:
            out.append(validate_item(body, params, endpoint))
        except ApiError as exc:
            out.append(exc)
    return out


async def prepare_items(
    state: ServerState,
    bodies: Sequence[Any],
    params: JobParams | None,
    endpoint: str = BATCH_ENDPOINT,
) -> AsyncIterator[tuple[int, PreparedItem | ApiError]]:
    """`prepare_item` for each body, in order, as (position, prepared request or its error).

    An upload holds up to BATCH_MAX_ITEMS items: their model validation runs in one worker
    thread, and the rest (`prepare_chat`, which compiles and tokenizes in threads of its own)
    gives other requests a turn every `YIELD_EVERY` items, so a large upload never holds the
    event loop. The caller may stop at the first error (upload) or record it and go on (worker).
    """
    validated = await asyncio.to_thread(_validate_all, bodies, params, endpoint)
    for position, outcome in enumerate(validated):
        if position % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        if isinstance(outcome, ApiError):
            yield position, outcome
        else:
            yield position, await _prepare_or_error(state, outcome)


async def _prepare_or_error(
    state: ServerState, request: ChatCompletionRequest | CompletionRequest
) -> PreparedItem | ApiError:
    try:
        return await _prepare(state, request)
    except ApiError as exc:
        return exc
