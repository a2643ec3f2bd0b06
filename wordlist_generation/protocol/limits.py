"""Each server limit checked in one place, shared by chat requests and batch job parameters."""

from __future__ import annotations

from ..errors import InvalidRequest
from ..settings import Settings


def check_max_tokens(settings: Settings, value: int | None, param: str = "max_tokens") -> None:
    if value is not None and value > settings.ALLOWED_MAX_NEW_TOKENS:
        raise InvalidRequest(
            f"{param} is {value}, above this server's maximum of "
            f"{settings.ALLOWED_MAX_NEW_TOKENS}",
            param=param,
        )


def check_num_beams(settings: Settings, value: int | None) -> None:
    if value is not None and value > settings.MAX_NUM_BEAMS:
        raise InvalidRequest(
            f"num_beams must be at most {settings.MAX_NUM_BEAMS}", param="num_beams"
        )


def check_length_penalty(num_beams: int, length_penalty: float | None) -> None:
    if num_beams == 1 and length_penalty is not None:
        raise InvalidRequest(
            "length_penalty only applies to beam search (num_beams > 1)", param="length_penalty"
        )


def check_work(settings: Settings, factors: dict[str, int], param: str) -> None:
    """The product of `factors` (named as the message shows them, e.g. n, num_beams, max_tokens)
    within MAX_WORK_TOKENS: the one cap on how many tokens a request may make the server decode."""
    work = 1
    for value in factors.values():
        work *= value
    if work > settings.MAX_WORK_TOKENS:
        names = " x ".join(factors)
        values = " x ".join(str(v) for v in factors.values())
        raise InvalidRequest(
            f"{names} = {values} = {work} exceeds this server's limit of "
            f"{settings.MAX_WORK_TOKENS}",
            param=param,
        )
