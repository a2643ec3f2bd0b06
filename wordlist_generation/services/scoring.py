"""Scoring texts as a service: request -> token ids -> one forward pass per text -> surprisal.

What is scored: the text's own tokens, as the tokenizer encodes the text alone (no special
tokens), each given everything before it.

- With `messages`, the context is the chat template of those messages with the assistant's
  generation prompt (exactly the prompt a chat request would generate from), so the text is
  scored as the assistant's answer; the end-of-turn token after it is not scored.
- Without, the text is plain text from its start: the context is the tokenizer's BOS token when
  it has one (SmolLM2: `<|im_start|>`); a tokenizer without one gives the text's first token as
  context, and that token is not scored (nor counted in `tokens`).

Words are the text's runs of letters (with inner apostrophes, hyphens, periods and middle dots,
and an elided clitic's final apostrophe: `l'`); a token belongs to the first word whose characters
it covers (its offsets in the text), so a word's surprisal is the sum over its tokens, and tokens
of spaces, digits or punctuation alone belong to no word.

Admission: a scoring request counts as a chat request of one row (its texts are read one after
another): the cheap 429 check before any work, then one row held from the limiter for its forward
passes, given back when they have really finished.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..constraints.compiler import Compiled
from ..constraints.spec import ConstraintSpec
from ..engine.base import Engine
from ..engine.params import ScoreOutput
from ..errors import ContextLengthExceeded, InvalidRequest
from ..protocol.score import (
    ScoreRequest,
    ScoreResponse,
    ScoreUsage,
    TextScore,
    TokenScore,
    TopToken,
    WordScore,
)
from .chat import check_model
from .constraints import ResolvedConstraint, compile_spec
from .state import ServerState

WORD = re.compile(r"[^\W\d_]+(?:['’.\-·][^\W\d_]+)*'?", re.UNICODE)
LN2 = math.log(2)
#: Stands in for a log-probability of minus infinity (a token the model rules out), which JSON
#: cannot carry.
LOGPROB_FLOOR = -1e4


@dataclass
class Target:
    """One text to score: the tokens given as context, those scored, and where they sit."""

    param: str
    text: str
    context: list[int]
    ids: list[int]
    #: Character offsets of each scored token in `text`, or None (a tokenizer without offsets).
    spans: list[tuple[int, int]] | None


def encode_text(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """The text's token ids without special tokens, and each token's characters (fast
    tokenizers; None from one that cannot say)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a Python tokenizer has no offsets
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None
    return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def prepare_targets(
    engine: Engine, request: ScoreRequest, max_input_tokens: int
) -> list[Target]:
    """Token ids of every text and its context (see the module's docstring). Blocking."""
    messages = request.chat()
    bos = engine.tokenizer.bos_token_id
    context: list[int] = []
    if messages is not None:
        context = engine.encode_chat(messages)
        if len(context) >= max_input_tokens:
            raise ContextLengthExceeded(
                f"This model's maximum input length is {max_input_tokens} tokens; your messages "
                f"resulted in {len(context)} tokens, leaving no room for the text",
                param="messages",
            )
    elif bos is not None:
        context = [bos]
    targets = []
    for param, text in request.items():
        ids, spans = encode_text(engine.tokenizer, text)
        total = len(context) + len(ids)
        if total > max_input_tokens:
            raise ContextLengthExceeded(
                f"This model's maximum input length is {max_input_tokens} tokens; the context "
                f"and this text resulted in {total} tokens",
                param=param,
            )
        own = context
        if not own:  # no BOS: the first token is context, not scored
            own, ids, spans = ids[:1], ids[1:], spans[1:] if spans is not None else None
        if not ids:
            raise InvalidRequest(
                "the text has no token to score"
                + ("" if context else " (without a BOS token, the first token is only context)"),
                param=param,
            )
        if request.detail == "per_word" and spans is None:
            raise InvalidRequest(
                "this model's tokenizer does not report character offsets, which per_word needs",
                param="detail",
            )
        targets.append(Target(param, text, own, ids, spans))
    return targets


def score_targets(engine: Engine, targets: list[Target], top_k: int) -> list[ScoreOutput]:
    """One forward pass per text, one after another. Blocking."""
    return [engine.score(t.context, t.ids, top_k) for t in targets]


def word_scores(text: str, spans: list[tuple[int, int]], bits: list[float]) -> list[WordScore]:
    """Each word of `text` with the summed surprisal of the tokens that cover it (a token counts
    for the first word it overlaps); words none of whose tokens were scored are left out."""
    words = [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
    sums = [0.0] * len(words)
    counts = [0] * len(words)
    w = 0
    for (start, end), b in zip(spans, bits, strict=True):
        while w < len(words) and words[w][2] <= start:
            w += 1
        if w < len(words) and words[w][1] < end and start < end:
            sums[w] += b
            counts[w] += 1
    return [
        WordScore(word=word, start=s, end=e, surprisal_bits=sums[i], tokens=counts[i])
        for i, (word, s, e) in enumerate(words)
        if counts[i]
    ]


def _finite(logprob: float) -> float:
    return logprob if logprob >= LOGPROB_FLOOR else LOGPROB_FLOOR


def text_score(
    index: int,
    target: Target,
    output: ScoreOutput,
    detail: str,
    decode: Callable[[list[int]], str],
    vocabulary: ResolvedConstraint | None,
) -> TextScore:
    logprobs = [_finite(lp) for lp in output.logprobs]
    bits = [-lp / LN2 for lp in logprobs]
    loss = -sum(logprobs) / len(logprobs)
    score = TextScore(
        index=index,
        tokens=len(logprobs),
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        surprisal_bits=sum(bits),
    )
    if detail == "per_token":
        score.per_token = []
        for i, (token, lp) in enumerate(zip(target.ids, logprobs, strict=True)):
            entry = TokenScore(token=decode([token]), id=token, logprob=lp, surprisal_bits=bits[i])
            if target.spans is not None:
                entry.start, entry.end = target.spans[i]
            if output.top_ids:
                entry.top = [
                    TopToken(token=decode([t]), id=t, logprob=_finite(v))
                    for t, v in zip(output.top_ids[i], output.top_logprobs[i], strict=True)
                ]
            score.per_token.append(entry)
    elif detail == "per_word":
        assert target.spans is not None
        score.per_word = word_scores(target.text, target.spans, bits)
    if vocabulary is not None:
        score.vocabulary = vocabulary.report([vocabulary.constraint.check(target.text)])
    return score


def respond(
    model_id: str,
    request: ScoreRequest,
    targets: list[Target],
    outputs: list[ScoreOutput],
    engine: Engine,
    vocabulary: ResolvedConstraint | None,
) -> ScoreResponse:
    """The response body (decoding tokens and re-checking words: blocking)."""

    def decode(ids: list[int]) -> str:
        return engine.tokenizer.decode(ids)

    data = [
        text_score(i, target, output, request.detail, decode, vocabulary)
        for i, (target, output) in enumerate(zip(targets, outputs, strict=True))
    ]
    read = sum(len(t.context) + len(t.ids) for t in targets)
    return ScoreResponse(
        model=model_id, data=data, usage=ScoreUsage(prompt_tokens=read, total_tokens=read)
    )


async def _vocabulary(state: ServerState, spec: ConstraintSpec | None) -> ResolvedConstraint | None:
    if spec is None:
        return None
    compiled: Compiled = await compile_spec(state, spec)
    return ResolvedConstraint(
        spec=spec,
        constraint=compiled.constraint,
        cache_hit=compiled.cache_hit,
        compile_seconds=compiled.compile_seconds,
    )


async def score_texts(state: ServerState, request: ScoreRequest) -> ScoreResponse:
    """Check, compile the vocabulary (if any), tokenize, score and build the response; every
    blocking step in a thread, the forward passes inside the limiter's admission."""
    settings = state.settings
    model_id = check_model(state, request.model)
    engine = state.require_engine()
    texts = request.items()
    if len(texts) > settings.MAX_N:
        raise InvalidRequest(
            f"at most {settings.MAX_N} texts per request (MAX_N); you sent {len(texts)}",
            param="texts",
        )
    spec = request.to_spec()
    limiter = state.limiter
    assert limiter is not None
    limiter.check(1)
    vocabulary = await _vocabulary(state, spec)
    targets = await asyncio.to_thread(
        prepare_targets, engine, request, settings.MAX_INPUT_TOKENS
    )
    rows = await limiter.acquire(1)
    try:
        work = asyncio.ensure_future(
            asyncio.to_thread(score_targets, engine, targets, request.top_k)
        )
    except BaseException:
        limiter.release(rows)
        raise
    work.add_done_callback(lambda _: limiter.release(rows))  # when the passes have finished
    outputs = await asyncio.shield(work)
    return await asyncio.to_thread(
        respond, model_id, request, targets, outputs, engine, vocabulary
    )
