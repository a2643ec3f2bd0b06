"""Job-wide generation parameters of a job-API upload: defaults, limits and the vocabulary.

The limits themselves (`protocol.limits`) and the vocabulary rules (`protocol.constraint_spec`)
are the chat request's; what is batch-specific lives here: defaults capped at the server's
maxima, and remembering which values the client actually sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..constraints.spec import ConstraintSpec
from ..errors import InvalidRequest
from ..protocol import ChatCompletionRequest, constraint_spec
from ..protocol.limits import check_length_penalty, check_max_tokens, check_num_beams
from ..protocol.screen import screen
from ..services import constraints as constraint_service
from ..services.state import ServerState
from ..settings import Settings

#: Item fields that the job API takes from the query string instead (per-item values are ignored).
JOB_WIDE_FIELDS: frozenset[str] = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "num_beams",
        "length_penalty",
        "vocab_lang",
        "vocab_n_words",
        "vocab_unit",
    }
)


@dataclass(frozen=True)
class JobParams:
    """Job-wide generation parameters of a job-API upload, after defaults and limits.

    `num_beams_explicit` and `length_penalty` (None = not sent) keep what the client actually
    asked for, because the decoding rule treats an explicit value differently from the default:
    a sampling item (temperature > 0) runs with one beam unless the job *asked* for beams.

    Stored in the job record as `asdict(...)` and rebuilt with `JobParams(**...)` after a restart,
    so the fields are plain JSON values (the raw `constraints` list, not its parsed spec).
    """

    max_tokens: int
    num_beams: int
    num_beams_explicit: bool = False
    length_penalty: float | None = None
    vocab_lang: str | None = None
    vocab_n_words: int | None = None
    vocab_unit: str | None = None
    #: Job-wide phonological constraints (the raw list, validated and compiled at upload).
    constraints: list[dict[str, Any]] | None = None

    @classmethod
    def from_query(
        cls,
        settings: Settings,
        *,
        max_tokens: int | None,
        num_beams: int | None,
        length_penalty: float | None,
        vocab_lang: str | None,
        vocab_n_words: int | None,
        vocab_unit: str | None = None,
    ) -> JobParams:
        """Defaults from the settings; explicit values above the maxima are refused, as on chat.

        A default larger than the server's maximum (e.g. BATCH_DEFAULT_MAX_TOKENS=512 with
        ALLOWED_MAX_NEW_TOKENS=256) is capped rather than turned into an error the client cannot
        fix.
        """
        check_max_tokens(settings, max_tokens)
        check_num_beams(settings, num_beams)
        beams = num_beams or min(settings.BATCH_DEFAULT_NUM_BEAMS, settings.MAX_NUM_BEAMS)
        check_length_penalty(beams, length_penalty)
        return cls(
            max_tokens=max_tokens
            or min(settings.BATCH_DEFAULT_MAX_TOKENS, settings.ALLOWED_MAX_NEW_TOKENS),
            num_beams=beams,
            num_beams_explicit=num_beams is not None,
            length_penalty=length_penalty,
            vocab_lang=vocab_lang,
            vocab_n_words=vocab_n_words,
            vocab_unit=vocab_unit,
        )

    def with_constraints(self, raw: str) -> JobParams:
        """These parameters with the JSON text of a `constraints` field as their constraints."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidRequest(
                "constraints must be a JSON list of constraint objects", param="constraints"
            ) from None
        screen(data, "constraints", field_depth=0)
        return replace(self, constraints=data)

    def spec(self) -> ConstraintSpec | None:
        """The job's vocabulary; a bad combination of fields is a 400 naming the query field."""
        return constraint_spec(
            self.vocab_lang, self.vocab_n_words, self.constraints, vocab_unit=self.vocab_unit
        )

    def apply(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        """The item with the job-wide values in place, following the chat decoding rule."""
        update: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "max_completion_tokens": None,
            "vocab_lang": self.vocab_lang,
            "vocab_n_words": self.vocab_n_words,
            "vocab_unit": self.vocab_unit,
            "constraints": self.constraints,
        }
        if request.temperature is not None and request.temperature > 0:
            if self.num_beams_explicit and self.num_beams > 1:
                raise InvalidRequest(
                    f"temperature > 0 selects sampling, which does not combine with the job's "
                    f"num_beams={self.num_beams}: set this item's temperature to 0 or upload "
                    "the job without num_beams",
                    param="temperature",
                )
            if self.length_penalty is not None:
                raise InvalidRequest(
                    "temperature > 0 selects sampling, which does not combine with the job's "
                    "length_penalty (beam search only)",
                    param="temperature",
                )
            update.update(num_beams=None, length_penalty=None)
        else:
            update.update(num_beams=self.num_beams, length_penalty=self.length_penalty)
        return request.model_copy(update=update)

    def public(self) -> dict[str, Any]:
        """What the client asked for, with the defaults filled in (status objects, the log)."""
        return {
            "max_tokens": self.max_tokens,
            "num_beams": self.num_beams,
            "length_penalty": 1.0 if self.length_penalty is None else self.length_penalty,
            "vocab_lang": self.vocab_lang,
            "vocab_n_words": self.vocab_n_words,
            "vocab_unit": self.vocab_unit or "word",
            "constraints": self.constraints,
        }


async def check_vocabulary(state: ServerState, params: JobParams) -> None:
    """The job's vocabulary built once and compiled once, exactly as chat does.

    An unknown list, an unknown phoneme, an unsatisfiable set or a `max_tokens` that cannot fit
    the required words is refused before a job exists; the compiled constraint then sits in the
    cache for the worker.
    """
    await constraint_service.resolve(state, params.spec(), params.max_tokens)


async def job_params(
    state: ServerState,
    *,
    max_tokens: int | None,
    num_beams: int | None,
    length_penalty: float | None,
    vocab_lang: str | None,
    vocab_n_words: int | None,
    constraints: str | None,
    vocab_unit: str | None = None,
) -> JobParams:
    """Every check of the job-wide query parameters, before the file is even read."""
    params = JobParams.from_query(
        state.settings,
        max_tokens=max_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        vocab_lang=vocab_lang,
        vocab_n_words=vocab_n_words,
        vocab_unit=vocab_unit,
    )
    if constraints is not None:
        params = params.with_constraints(constraints)
    await check_vocabulary(state, params)
    return params


async def with_job_constraints(state: ServerState, params: JobParams, raw: str) -> JobParams:
    """Job-wide constraints sent as a form field next to the file, checked like the query's."""
    params = params.with_constraints(raw)
    await check_vocabulary(state, params)
    return params
