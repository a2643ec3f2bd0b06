"""The request model: decoding-mode rule, limits and refusals, without a model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wordlist_generation.errors import InvalidRequest, UnsupportedParameter
from wordlist_generation.protocol import ChatCompletionRequest
from wordlist_generation.settings import Settings

MSG = [{"role": "user", "content": "hola"}]


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        DEFAULT_NUM_BEAMS=10,
        MAX_NUM_BEAMS=10,
        ALLOWED_MAX_NEW_TOKENS=1024,
        DEFAULT_MAX_NEW_TOKENS=512,
        MAX_WORK_TOKENS=65536,
    )


def params(settings: Settings, **fields):
    return ChatCompletionRequest(model="m", messages=MSG, **fields).to_params(settings)


def test_default_is_beam_search_with_default_beams(settings: Settings) -> None:
    p = params(settings)
    assert p.mode == "beam" and p.num_beams == 10 and p.max_new_tokens == 512


def test_temperature_zero_is_beam_search_and_num_beams_one_is_greedy(settings: Settings) -> None:
    assert params(settings, temperature=0).mode == "beam"
    assert params(settings, num_beams=1).mode == "greedy"
    assert params(settings, temperature=0.0, num_beams=1).mode == "greedy"


def test_positive_temperature_samples(settings: Settings) -> None:
    p = params(settings, temperature=0.7, top_p=0.9, top_k=40, seed=3, n=3)
    assert p.mode == "sample" and p.num_beams == 1 and p.n == 3
    assert (p.temperature, p.top_p, p.top_k, p.seed) == (0.7, 0.9, 40, 3)


def test_sampling_with_explicit_beams_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as err:
        params(settings, temperature=0.7, num_beams=4)
    assert err.value.param == "num_beams"
    assert params(settings, temperature=0.7, num_beams=1).mode == "sample"


@pytest.mark.parametrize("field,value", [("top_p", 0.5), ("top_k", 5)])
def test_sampling_knobs_without_sampling_are_refused(settings: Settings, field, value) -> None:
    with pytest.raises(InvalidRequest) as err:
        params(settings, **{field: value})
    assert err.value.param == field


def test_n_above_beams_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as err:
        params(settings, num_beams=2, n=3)
    assert err.value.param == "n"
    assert params(settings, num_beams=4, n=3).n == 3


def test_max_tokens_above_allowed_names_the_maximum(settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as err:
        params(settings, max_tokens=5000)
    assert err.value.param == "max_tokens" and "1024" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        params(settings, max_completion_tokens=5000)
    assert err.value.param == "max_completion_tokens"
    assert params(settings, max_completion_tokens=7).max_new_tokens == 7


def test_work_cap(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="exceeds"):
        params(settings, n=8, num_beams=10, max_tokens=1024)


def test_stop_normalized_and_bounded(settings: Settings) -> None:
    assert params(settings, stop="x").stop == ("x",)
    assert params(settings, stop=["a", "b"]).stop == ("a", "b")
    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=MSG, stop=["a", "b", "c", "d", "e"])
    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=MSG, stop="")


def test_unknown_field_refused_and_harmless_fields_ignored() -> None:
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest(model="m", messages=MSG, vocab_language="es")
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    req = ChatCompletionRequest(model="m", messages=MSG, user="u", metadata={"a": "b"}, store=False)
    assert req.model == "m"


@pytest.mark.parametrize(
    "field,value",
    [
        ("tools", [{"type": "function"}]),
        ("logit_bias", {"50256": -100}),
    ],
)
def test_unsupported_openai_parameters_are_named(settings: Settings, field, value) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        params(settings, **{field: value})
    assert err.value.param == field


def test_neutral_values_of_unsupported_parameters_pass(settings: Settings) -> None:
    assert params(settings, logprobs=False, response_format={"type": "text"}).mode == "beam"


def test_content_parts_are_joined() -> None:
    req = ChatCompletionRequest(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
    )
    assert req.messages[0].text() == "ab"


def test_penalties_are_passed(settings: Settings) -> None:
    p = params(settings, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.2)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.5, -0.5, 1.2)


def test_production_refuses_placeholder_token() -> None:
    with pytest.raises(ValidationError, match="SECRET_TOKEN"):
        Settings(_env_file=None, ENVIRONMENT="production")
    assert (
        Settings(_env_file=None, ENVIRONMENT="production", SECRET_TOKEN="s3cret").ENVIRONMENT
        == "production"
    )
