"""`response_format`: JSON (any object or a JSON schema) and regex answers, alone or with a
vocabulary whose words every JSON string value must use.

Through the real server on the tiny random model (its JSON is valid but its words are gibberish
from the list), then the constraint alone, replaying texts with no model.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
import torch
from fakes import AUTH, FakeEngine
from pydantic import BaseModel, Field
from wordcheck import violations

from wordlist_generation.constraints.spec import StructuredSpec, WordlistSpec

MODEL = "tiny-test"
MSG = [{"role": "user", "content": "Write a short story for children, in JSON."}]
VOCAB = {"vocab_lang": "es", "vocab_n_words": 1000, "num_beams": 1}


class Story(BaseModel):
    title: str = Field(max_length=24)
    story: str = Field(max_length=60)
    questions: list[str] = Field(max_length=2)


def strings(value: Any) -> list[str]:
    """Every string value of a parsed JSON value (keys excepted)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    return []


def test_parse_a_pydantic_model_in_a_vocabulary(tiny_server) -> None:
    completion = tiny_server.client().chat.completions.parse(
        model=MODEL,
        messages=MSG,
        response_format=Story,
        extra_body=VOCAB,
        max_tokens=400,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    story = choice.message.parsed
    assert isinstance(story, Story)
    assert story == Story.model_validate_json(choice.message.content)
    values = strings(json.loads(choice.message.content))
    assert len(values) == 2 + len(story.questions)
    for value in values:
        assert value and violations(value, "es", 1000) == [], value
    report = completion.model_extra["constraint"]
    assert report["response_format"] == "json_schema" and report["schema_name"] == "Story"
    assert report["vocab_lang"] == "es" and report["compliant"] is True


def replays(constraint: Any, text: str, tokenizer: Any) -> bool:
    """Does every token of `text` pass the constraint's masks, and may the answer end there?"""
    seq = constraint.start()
    for token in tokenizer.encode(text, add_special_tokens=False):
        allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
        seq.fill_allowed(allowed)
        if not allowed[token] or not seq.advance(token):
            return False
    return seq.can_end()


def test_json_object_without_a_vocabulary_parses(make_client, smollm_tokenizer) -> None:
    answer = '{"name": "Ana", "tags": [1, true, null, {"x": "y z"}], "n": -2.5e3}'
    client, _ = make_client(FakeEngine(smollm_tokenizer, answer))
    body = {"model": "fake-model", "messages": MSG, "response_format": {"type": "json_object"}}
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == json.loads(answer)
    assert r.json()["constraint"]["compliant"] is True
    compiler = client.app.state.server.compiler
    constraint = compiler.compile(StructuredSpec("json_object")).constraint
    assert replays(constraint, answer, smollm_tokenizer)
    assert not replays(constraint, '{"a": 1,}', smollm_tokenizer)
    assert not replays(constraint, "[1, 2]", smollm_tokenizer)
    assert not constraint.check('{"a": 1').ok


def test_string_values_follow_the_vocabulary(make_client, smollm_tokenizer) -> None:
    client, _ = make_client()
    compiler = client.app.state.server.compiler
    spec = StructuredSpec(
        "json_schema", json.dumps(Story.model_json_schema()), "story", WordlistSpec("es", 1000)
    )
    constraint = compiler.compile(spec).constraint
    good = '{"title": "La casa", "story": "Hola, \\"amigo\\".", "questions": ["¿Por qué?"]}'
    assert replays(constraint, good, smollm_tokenizer) and constraint.check(good).ok
    bad = '{"title": "La casa", "story": "Hola zzyzx", "questions": []}'
    assert not replays(constraint, bad, smollm_tokenizer)
    assert constraint.check(bad).violations == ["$.story: not in the word list: 'zzyzx'"]
    assert not replays(constraint, good.replace('"La casa"', "3"), smollm_tokenizer)


def test_values_of_any_type_follow_the_vocabulary_at_any_depth(make_client, smollm_tokenizer):
    client, _ = make_client()
    schema = {
        "type": "object",
        "properties": {"meta": {}, "tags": {"type": "array"}, "n": {"type": ["string", "null"]}},
        "required": ["meta", "tags", "n"],
    }
    spec = StructuredSpec("json_schema", json.dumps(schema), "s", WordlistSpec("es", 1000))
    constraint = client.app.state.server.compiler.compile(spec).constraint
    good = '{"meta": {"k": ["casa", 1]}, "tags": ["hola"], "n": null, "zz": {"y": true}}'
    assert replays(constraint, good, smollm_tokenizer) and constraint.check(good).ok
    for bad in (
        '{"meta": {"k": ["zzyzx"]}, "tags": [], "n": null}',
        '{"meta": 1, "tags": [{"a": "zzyzx"}], "n": null}',
        '{"meta": 1, "tags": [], "n": "zzyzx"}',
        '{"meta": 1, "tags": [], "n": null, "x": "zzyzx"}',
    ):
        assert not replays(constraint, bad, smollm_tokenizer), bad
        assert constraint.check(bad).violations[0].endswith("not in the word list: 'zzyzx'")


def test_regex_answers_match(tiny_server) -> None:
    pattern = r"(yes|no), [0-9]{2}-[a-z]{1,6}"
    completion = tiny_server.client().chat.completions.create(
        model=MODEL,
        messages=MSG,
        response_format={"type": "regex", "pattern": pattern},  # type: ignore[arg-type]
        max_tokens=32,
        n=2,
        extra_body={"num_beams": 2},
    )
    for choice in completion.choices:
        assert re.fullmatch(pattern, choice.message.content), choice.message.content
    assert completion.model_extra["constraint"]["compliant"] is True


def test_streamed_json_is_the_final_answer(tiny_server) -> None:
    schema = Story.model_json_schema()
    stream = tiny_server.client().chat.completions.create(
        model=MODEL,
        messages=MSG,
        response_format={"type": "json_schema", "json_schema": {"name": "story", "schema": schema}},
        max_tokens=400,
        stream=True,
        extra_body=VOCAB,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    Story.model_validate_json(text)


def test_a_cut_answer_is_returned_as_is_and_not_compliant(tiny_server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model=MODEL,
        messages=MSG,
        response_format={"type": "json_object"},
        max_tokens=6,
        extra_body={"num_beams": 1},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and choice.message.content.startswith("{")
    report = completion.model_extra["constraint"]
    assert report["compliant"] is False and report["violations"][0].startswith("not valid JSON")


@pytest.mark.parametrize(
    "response_format,extra,param",
    [
        (
            {"type": "json_schema", "json_schema": {"name": "s", "schema": {
                "type": "object", "properties": {"t": {"type": "string", "enum": ["qwzx"]}}}}},
            VOCAB,
            "response_format.json_schema.schema.properties.t.enum",
        ),
        ({"type": "yaml"}, {}, "response_format.type"),
        ({"type": "regex", "pattern": "[a-z]+"}, VOCAB, "response_format"),
    ],
)
def test_bad_formats_are_named(tiny_server, response_format, extra, param) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        tiny_server.client().chat.completions.create(
            model=MODEL, messages=MSG, response_format=response_format, extra_body=extra
        )
    assert err.value.body["param"] == param


def test_the_spec_keeps_the_schema_order_and_the_vocabulary() -> None:
    from wordlist_generation.protocol import ChatCompletionRequest

    schema = {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    spec = ChatCompletionRequest(
        model="m", messages=MSG, response_format=rf, vocab_lang="es", vocab_n_words=50
    ).to_spec()
    assert isinstance(spec, StructuredSpec) and hash(spec)
    assert list(json.loads(spec.body)["properties"]) == ["z", "a"]
    assert spec.vocabulary == WordlistSpec("es", 50) and spec.label() == "json_schema:n+es:50"
    text = ChatCompletionRequest(model="m", messages=MSG, response_format={"type": "text"})
    assert text.to_spec() is None
