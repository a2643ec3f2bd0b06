"""A table of bad inputs over every route that takes input: chat, text completions, preview,
score, the job API and the OpenAI Batch API. Each must be a 4xx in OpenAI's error shape naming the field at fault, and the
access log must record the status the client got. In-process (fake engine, real tokenizer, word
lists and compiler): no 5xx may come from input, whatever the engine."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import AUTH, FakeEngine, settings_for, wait_ready
from fastapi.testclient import TestClient

from wordlist_generation.apps import create_app

MODEL = "fake-model"
MSG = [{"role": "user", "content": "Hi"}]
GOOD = {"model": MODEL, "messages": MSG, "max_tokens": 4}
DEEP = "[" * 3000 + "]" * 3000  # past Python's recursion limit
NESTED = json.loads("[" * 100 + "]" * 100)  # parses, but nests past the server's limit


def chat(**kw: Any) -> dict[str, Any]:
    return {**GOOD, **kw}


def raw_chat(fragment: str) -> bytes:
    """A chat body with `fragment` (raw JSON text, e.g. `"temperature": NaN`) added."""
    return ('{"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}], '
            f'"max_tokens": 4, {fragment}}}').encode()


def json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def completion(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Hola", "max_tokens": 4, **kw}


def score(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "text": "Hola mundo", **kw}


def texts(*items: Any) -> dict[str, Any]:
    return {"model": MODEL, "texts": list(items)}


def surrogate(text: str = "a\\ud800b") -> str:
    """JSON text of a string holding a lone surrogate escape (Python's json writes it as is)."""
    return f'"{text}"'


def upload(items: Any) -> bytes:
    return items if isinstance(items, bytes) else json.dumps(items).encode()


def jsonl(*lines: Any) -> bytes:
    return b"\n".join(
        line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines
    )


def line(body: Any, custom_id: str = "a") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


#: (name, route, payload, status, param). Routes: `chat`, `completions`, `preview` and `score`
#: (payload: a JSON value, or raw bytes), `job` (payload: (file bytes, query, form)), `file` ((file bytes, form)), `batches`
#: (a JSON body for POST /v1/batches), `batch_lines` (JSONL uploaded, then a batch created on it).
CASES: list[tuple[str, str, Any, int, str | None]] = [
    # --- chat: text that is not Unicode (lone surrogates) in every place a string goes
    ("surrogate in content", "chat",
     raw_chat('"stop": "x"').replace(b'"Hi"', surrogate().encode()), 400, "messages.0.content"),
    ("low surrogate in content", "chat",
     raw_chat('"n": 1').replace(b'"Hi"', surrogate("\\udc00").encode()), 400,
     "messages.0.content"),
    ("surrogate in a text part", "chat",
     raw_chat('"n": 1').replace(b'"Hi"', b'[{"type": "text", "text": "a\\ud800"}]'), 400,
     "messages.0.content.0.text"),
    ("surrogate in stop", "chat", raw_chat(f'"stop": {surrogate()}'), 400, "stop"),
    ("surrogate in a stop list", "chat", raw_chat(f'"stop": ["x", {surrogate()}]'), 400,
     "stop.1"),
    ("surrogate in model", "chat", raw_chat('"n": 1').replace(b'"fake-model"', b'"m\\ud800"'),
     400, "model"),
    ("surrogate in vocab_lang", "chat",
     raw_chat(f'"vocab_lang": {surrogate()}, "vocab_n_words": 10'), 400, "vocab_lang"),
    ("surrogate as a field name", "chat", raw_chat('"\\ud800": 1'), 400, "\\ud800"),
    ("surrogate in a name", "chat",
     raw_chat('"n": 1').replace(b'"user",', b'"user", "name": "\\udfff",'), 400,
     "messages.0.name"),
    ("surrogate in a phoneme", "chat",
     raw_chat(f'"constraints": [{{"type": "exclude", "phonemes": [{surrogate()}]}}]'), 400,
     "constraints.0.phonemes.0"),
    ("surrogate in a stream", "chat",
     raw_chat('"stream": true').replace(b'"Hi"', surrogate().encode()), 400,
     "messages.0.content"),
    ("surrogate in a constrained request", "chat",
     raw_chat('"vocab_lang": "es", "vocab_n_words": 100').replace(b'"Hi"', surrogate().encode()),
     400, "messages.0.content"),
    # --- chat: NUL, nesting, numbers JSON has no room for
    ("NUL in vocab_lang", "chat", chat(vocab_lang="es\x00", vocab_n_words=10), 400, "vocab_lang"),
    ("NUL in model", "chat", chat(model="fake\x00model"), 404, "model"),
    ("nesting past the recursion limit", "chat", DEEP.encode(), 400, None),
    ("deep nesting in tools", "chat", chat(tools=NESTED), 400, "tools"),
    ("deep nesting in constraints", "chat", chat(constraints=NESTED), 400, "constraints"),
    ("deep nesting in metadata", "chat", chat(metadata={"a": NESTED}), 400, "metadata"),
    ("huge max_tokens", "chat", chat(max_tokens=10**30), 400, "max_tokens"),
    ("max_tokens overflowing to infinity", "chat", raw_chat('"top_k": 1e400'), 400, "top_k"),
    ("an integer of 5000 digits", "chat", raw_chat('"seed": ' + "9" * 5000), 400, None),
    ("NaN temperature", "chat", raw_chat('"temperature": NaN'), 400, "temperature"),
    ("Infinity top_p", "chat", raw_chat('"temperature": 1, "top_p": Infinity'), 400, "top_p"),
    ("-Infinity penalty", "chat", raw_chat('"presence_penalty": -Infinity'), 400,
     "presence_penalty"),
    ("NaN length_penalty", "chat", raw_chat('"length_penalty": NaN'), 400, "length_penalty"),
    ("NaN in a constraint", "chat",
     raw_chat('"constraints": [{"type": "bound", "norm": "zipf", "min_value": NaN}]'), 400,
     "constraints.0.min_value"),
    # --- chat: wrong types (strict, as the OpenAI API)
    ("max_tokens as a string", "chat", chat(max_tokens="4"), 400, "max_tokens"),
    ("max_tokens as a boolean", "chat", chat(max_tokens=True), 400, "max_tokens"),
    ("max_tokens as a float", "chat", chat(max_tokens=4.5), 400, "max_tokens"),
    ("temperature as a string", "chat", chat(temperature="0.5"), 400, "temperature"),
    ("n as a string", "chat", chat(n="1"), 400, "n"),
    ("stream as a string", "chat", chat(stream="true"), 400, "stream"),
    ("seed as a float", "chat", chat(seed=1.5), 400, "seed"),
    ("seed too large", "chat", chat(seed=2**64), 400, "seed"),
    ("num_beams as a string", "chat", chat(num_beams="2"), 400, "num_beams"),
    ("top_k zero", "chat", chat(temperature=1, top_k=0), 400, "top_k"),
    ("drafts zero", "chat", chat(drafts=0), 400, "drafts"),
    ("drafts above MAX_DRAFTS", "chat", chat(vocab_lang="es", vocab_n_words=100, drafts=9), 400,
     "drafts"),
    ("drafts as a string", "chat", chat(vocab_lang="es", vocab_n_words=100, drafts="3"), 400,
     "drafts"),
    ("drafts without a vocabulary", "chat", chat(drafts=2), 400, "drafts"),
    ("n x drafts over the work cap", "chat",
     chat(vocab_lang="es", vocab_n_words=100, temperature=1, n=4, drafts=8, max_tokens=1024),
     400, "drafts"),
    ("drafts beyond the beams", "chat",
     chat(vocab_lang="es", vocab_n_words=100, num_beams=2, drafts=3), 400, "drafts"),
    ("repetition_penalty zero", "chat", chat(repetition_penalty=0), 400, "repetition_penalty"),
    ("messages as a string", "chat", chat(messages="Hi"), 400, "messages"),
    ("a null message", "chat", chat(messages=[None]), 400, "messages.0"),
    ("null content", "chat", chat(messages=[{"role": "user", "content": None}]), 400,
     "messages.0.content"),
    ("role as a number", "chat", chat(messages=[{"role": 5, "content": "x"}]), 400,
     "messages.0.role"),
    ("stop as a number", "chat", chat(stop=5), 400, "stop"),
    ("an empty stop", "chat", chat(stop=[""]), 400, "stop"),
    ("stream_options as a string", "chat", chat(stream=True, stream_options="yes"), 400,
     "stream_options"),
    ("model empty", "chat", chat(model=""), 400, "model"),
    ("model as a number", "chat", chat(model=5), 400, "model"),
    ("logit_bias", "chat", chat(logit_bias={"1": 100}), 400, "logit_bias"),
    ("top_logprobs without logprobs", "chat", chat(top_logprobs=2), 400, "top_logprobs"),
    ("top_logprobs with logprobs false", "chat", chat(logprobs=False, top_logprobs=0), 400,
     "top_logprobs"),
    ("top_logprobs above 20", "chat", chat(logprobs=True, top_logprobs=21), 400,
     "top_logprobs"),
    ("top_logprobs as a string", "chat", chat(logprobs=True, top_logprobs="2"), 400,
     "top_logprobs"),
    ("logprobs as a string", "chat", chat(logprobs="true"), 400, "logprobs"),
    ("logprobs as a number", "chat", chat(logprobs=1), 400, "logprobs"),
    ("max_tokens disagree", "chat", chat(max_tokens=4, max_completion_tokens=5), 400,
     "max_completion_tokens"),
    # --- chat: the vocabulary
    ("vocab_n_words as a string", "chat", chat(vocab_lang="es", vocab_n_words="1000"), 400,
     "vocab_n_words"),
    ("vocab_n_words as a float", "chat", chat(vocab_lang="es", vocab_n_words=1.5), 400,
     "vocab_n_words"),
    ("vocab_n_words huge", "chat", chat(vocab_lang="es", vocab_n_words=10**12), 400,
     "vocab_n_words"),
    ("vocab_n_words negative", "chat", chat(vocab_lang="es", vocab_n_words=-1), 400,
     "vocab_n_words"),
    ("vocab_lang path traversal", "chat", chat(vocab_lang="../../etc/passwd", vocab_n_words=10),
     400, "vocab_lang"),
    ("vocab_lang unknown", "chat", chat(vocab_lang="zz", vocab_n_words=10), 404, "vocab_lang"),
    ("vocab_lang without a size", "chat", chat(vocab_lang="es"), 400, "vocab_n_words"),
    ("vocab_unit unknown", "chat", chat(vocab_lang="es", vocab_n_words=10, vocab_unit="stem"),
     400, "vocab_unit"),
    ("vocab_unit as a number", "chat", chat(vocab_lang="es", vocab_n_words=10, vocab_unit=1),
     400, "vocab_unit"),
    ("vocab_unit without a list", "chat", chat(vocab_unit="lemma"), 400, "vocab_unit"),
    ("vocab_unit lemma with sounds", "chat",
     chat(vocab_unit="lemma", constraints=[{"type": "exclude", "phonemes": ["r"]}]), 400,
     "vocab_unit"),
    ("more headwords than the lemma list", "chat",
     chat(vocab_lang="es", vocab_n_words=49_999, vocab_unit="lemma"), 400, "vocab_n_words"),
    ("constraints not a list", "chat", chat(constraints={"type": "exclude"}), 400,
     "constraints"),
    ("unknown constraint type", "chat", chat(constraints=[{"type": "nope"}]), 400,
     "constraints.0.type"),
    # --- chat: response_format (alone and with a vocabulary)
    ("response_format not an object", "chat", chat(response_format="json"), 400,
     "response_format"),
    ("response_format unknown type", "chat", chat(response_format={"type": "yaml"}), 400,
     "response_format.type"),
    ("response_format unknown key", "chat",
     chat(response_format={"type": "json_object", "schema": {}}), 400, "response_format.schema"),
    ("json_schema without schema", "chat",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "s"}}), 400,
     "response_format.json_schema.schema"),
    ("json_schema without name", "chat",
     chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}), 400,
     "response_format.json_schema.name"),
    ("json_schema llguidance refuses", "chat",
     chat(response_format=json_schema({"type": "object", "not": {"type": "object"}})), 400,
     "response_format"),
    ("json_schema enum word outside the list", "chat",
     chat(vocab_lang="es", vocab_n_words=1000, response_format=json_schema(
         {"type": "object", "properties": {"title": {"type": "string", "enum": ["qwzx"]}}})),
     400, "response_format.json_schema.schema.properties.title.enum"),
    ("json_schema string format with a vocabulary", "chat",
     chat(vocab_lang="es", vocab_n_words=1000, response_format=json_schema(
         {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}})),
     400, "response_format.json_schema.schema.properties.when.format"),
    ("json_schema pattern with a vocabulary", "chat",
     chat(vocab_lang="es", vocab_n_words=1000, response_format=json_schema(
         {"type": "array", "items": {"type": "string", "pattern": "^a+$"}})),
     400, "response_format.json_schema.schema.items.pattern"),
    ("response_format with sounds", "chat",
     chat(constraints=[{"type": "exclude", "phonemes": ["r"]}],
          response_format={"type": "json_object"}), 400, "response_format"),
    ("regex with a vocabulary", "chat",
     chat(vocab_lang="es", vocab_n_words=1000, response_format={"type": "regex", "pattern": "a"}),
     400, "response_format"),
    ("regex invalid", "chat", chat(response_format={"type": "regex", "pattern": "(a"}), 400,
     "response_format.pattern"),
    # --- chat: bodies that are not a request
    ("empty body", "chat", b"", 400, None),
    ("null body", "chat", b"null", 400, None),
    ("a string body", "chat", b'"hello"', 400, None),
    ("invalid UTF-8", "chat", b'{"model": "\xff\xfe"}', 400, None),
    ("truncated JSON", "chat", b'{"model": "fake-model", "messages": [', 400, None),
    # --- text completions
    ("completion max_tokens 0 without echo", "completions", completion(max_tokens=0), 400,
     "max_tokens"),
    ("completion max_tokens negative", "completions", completion(max_tokens=-1), 400,
     "max_tokens"),
    ("completion huge max_tokens", "completions", completion(max_tokens=10**30), 400,
     "max_tokens"),
    ("completion max_tokens 0 with a vocabulary", "completions",
     completion(max_tokens=0, echo=True, vocab_lang="es", vocab_n_words=100), 400, "max_tokens"),
    ("completion logprobs 6", "completions", completion(logprobs=6), 400, "logprobs"),
    ("completion logprobs negative", "completions", completion(logprobs=-1), 400, "logprobs"),
    ("completion logprobs as a boolean", "completions", completion(logprobs=True), 400,
     "logprobs"),
    ("completion suffix", "completions", completion(suffix="."), 400, "suffix"),
    ("completion best_of 2", "completions", completion(best_of=2), 400, "best_of"),
    ("completion logit_bias", "completions", completion(logit_bias={"1": 5}), 400,
     "logit_bias"),
    ("completion without a prompt", "completions", {"model": MODEL}, 400, "prompt"),
    ("completion prompt empty list", "completions", completion(prompt=[]), 400, "prompt"),
    ("completion prompt as a number", "completions", completion(prompt=5), 400, "prompt"),
    ("completion prompt null", "completions", completion(prompt=None), 400, "prompt"),
    ("completion prompt item as a number", "completions", completion(prompt=["a", 3]), 400,
     "prompt.1"),
    ("completion surrogate in prompt", "completions",
     f'{{"model": "{MODEL}", "prompt": {surrogate()}}}'.encode(), 400, "prompt"),
    ("completion surrogate in a prompt list", "completions",
     f'{{"model": "{MODEL}", "prompt": ["a", {surrogate()}]}}'.encode(), 400, "prompt.1"),
    ("completion prompt past MAX_INPUT_TOKENS", "completions",
     completion(prompt="hola " * 5000), 400, "prompt"),
    ("completion second prompt past MAX_INPUT_TOKENS", "completions",
     completion(prompt=["hola", "hola " * 5000]), 400, "prompt.1"),
    ("completion prompts over MAX_N", "completions", completion(prompt=["a"] * 9), 400,
     "prompt"),
    ("completion a streamed list of prompts", "completions",
     completion(prompt=["a", "b"], stream=True), 400, "prompt"),
    ("completion echo as a string", "completions", completion(echo="true"), 400, "echo"),
    ("completion NaN temperature", "completions",
     f'{{"model": "{MODEL}", "prompt": "a", "temperature": NaN}}'.encode(), 400, "temperature"),
    ("completion num_beams while sampling", "completions",
     completion(temperature=1, num_beams=2), 400, "num_beams"),
    ("completion top_p without sampling", "completions", completion(top_p=0.5), 400, "top_p"),
    ("completion n above num_beams", "completions", completion(n=2), 400, "n"),
    ("completion an empty stop", "completions", completion(stop=[""]), 400, "stop"),
    ("completion stream_options without stream", "completions",
     completion(stream_options={"include_usage": True}), 400, "stream_options"),
    ("completion drafts without a vocabulary", "completions", completion(drafts=2), 400,
     "drafts"),
    ("completion vocab_prompt_hint", "completions", completion(vocab_prompt_hint=True), 400,
     "vocab_prompt_hint"),
    ("completion chat messages", "completions", completion(messages=MSG), 400, "messages"),
    ("completion vocab_lang unknown", "completions",
     completion(vocab_lang="zz", vocab_n_words=10), 404, "vocab_lang"),
    ("completion vocab_n_words as a string", "completions",
     completion(vocab_lang="es", vocab_n_words="10"), 400, "vocab_n_words"),
    ("completion unknown model", "completions", completion(model="nope"), 404, "model"),
    ("completion empty body", "completions", b"", 400, None),
    # --- preview
    ("preview without constraints", "preview", {}, 400, "constraints"),
    ("preview surrogate phoneme", "preview",
     b'{"constraints": [{"type": "exclude", "phonemes": ["\\ud800"]}]}', 400,
     "constraints.0.phonemes.0"),
    ("preview unknown phoneme", "preview",
     {"constraints": [{"type": "exclude", "phonemes": ["qq"]}]}, 400,
     "constraints.0.phonemes.0"),
    ("preview top_k as a string", "preview",
     {"constraints": [{"type": "exclude", "phonemes": ["r"]}], "top_k": "5"}, 400, "top_k"),
    ("preview top_k zero", "preview",
     {"constraints": [{"type": "exclude", "phonemes": ["r"]}], "top_k": 0}, 400, "top_k"),
    ("preview another language", "preview",
     {"constraints": [{"type": "exclude", "phonemes": ["r"]}], "vocab_lang": "es"}, 400,
     "vocab_lang"),
    ("preview deep nesting", "preview", {"constraints": NESTED}, 400, "constraints"),
    ("preview NaN bound", "preview",
     b'{"constraints": [{"type": "bound", "norm": "zipf", "max_value": NaN}]}', 400,
     "constraints.0.max_value"),
    ("preview nesting past the recursion limit", "preview", DEEP.encode(), 400, None),
    # --- score
    ("score with both text and texts", "score", score(texts=["Hola"]), 400, "texts"),
    ("score with neither text nor texts", "score", {"model": MODEL}, 400, "text"),
    ("score empty text", "score", score(text=""), 400, "text"),
    ("score empty texts list", "score", texts(), 400, "texts"),
    ("score empty item of texts", "score", texts("Hola", ""), 400, "texts.1"),
    ("score texts over MAX_N", "score", texts(*["Hola"] * 9), 400, "texts"),
    ("score text as a number", "score", score(text=3), 400, "text"),
    ("score texts item as a number", "score", texts("Hola", 3), 400, "texts.1"),
    ("score surrogate in text", "score",
     f'{{"model": "{MODEL}", "text": {surrogate()}}}'.encode(), 400, "text"),
    ("score top_k above 20", "score", score(detail="per_token", top_k=21), 400, "top_k"),
    ("score top_k as a string", "score", score(detail="per_token", top_k="3"), 400, "top_k"),
    ("score top_k with summary", "score", score(top_k=3), 400, "top_k"),
    ("score top_k with per_word", "score", score(detail="per_word", top_k=3), 400, "top_k"),
    ("score detail unknown", "score", score(detail="per_char"), 400, "detail"),
    ("score vocab_n_words without vocab_lang", "score", score(vocab_n_words=10), 400,
     "vocab_lang"),
    ("score vocab_lang unknown", "score", score(vocab_lang="zz", vocab_n_words=10), 404,
     "vocab_lang"),
    ("score unknown field", "score", score(temperature=1), 400, "temperature"),
    ("score unknown model", "score", score(model="nope"), 404, "model"),
    ("score empty messages", "score", score(messages=[]), 400, "messages"),
    ("score text past MAX_INPUT_TOKENS", "score", score(text="hola " * 5000), 400, "text"),
    ("score second text past MAX_INPUT_TOKENS", "score", texts("Hola", "hola " * 5000), 400,
     "texts.1"),
    ("score messages past MAX_INPUT_TOKENS", "score",
     score(messages=[{"role": "user", "content": "hola " * 5000}]), 400, "messages"),
    # --- the job API
    ("job without a file", "job", (None, {}, {}), 400, "file"),
    ("job with two files", "job", (b"[]", {}, {"second": True}), 400, "file"),
    ("job file not JSON", "job", (b"{nope", {}, {}), 400, "file"),
    ("job file nested past the recursion limit", "job", (DEEP.encode(), {}, {}), 400, "file"),
    ("job file not an array", "job", (upload({"a": 1}), {}, {}), 400, "file"),
    ("job file empty array", "job", (upload([]), {}, {}), 400, "file"),
    ("job with too many items", "job", (upload([GOOD] * 5), {}, {}), 400, "file"),
    ("job file over the limit", "job", (b" " * 9000 + b"[]", {}, {}), 413, "file"),
    ("job item with a surrogate", "job",
     (b'[{"model": "fake-model", "messages": [{"role": "user", "content": "\\ud800"}]}]', {},
      {}), 400, "[0].messages.0.content"),
    ("job item deep nesting", "job", (upload([chat(tools=NESTED)]), {}, {}), 400, "[0].tools"),
    ("job item temperature as a string", "job", (upload([chat(temperature="1")]), {}, {}), 400,
     "[0].temperature"),
    ("job item NaN", "job",
     (b'[{"model": "fake-model", "messages": [], "temperature": NaN}]', {}, {}), 400,
     "[0].temperature"),
    ("job item not an object", "job", (upload([5]), {}, {}), 400, "[0]"),
    ("job max_tokens not a number", "job", (upload([GOOD]), {"max_tokens": "abc"}, {}), 400,
     "max_tokens"),
    ("job vocab_n_words without a language", "job",
     (upload([GOOD]), {"vocab_n_words": "10"}, {}), 400, "vocab_lang"),
    ("job vocab_unit unknown", "job",
     (upload([GOOD]), {"vocab_lang": "es", "vocab_n_words": "10", "vocab_unit": "x"}, {}), 400,
     "vocab_unit"),
    ("job item drafts above MAX_DRAFTS", "job",
     (upload([chat(drafts=99)]), {"vocab_lang": "es", "vocab_n_words": "10"}, {}), 400,
     "[0].drafts"),
    ("job constraints nested past the recursion limit", "job",
     (upload([GOOD]), {}, {"constraints": DEEP}), 400, "constraints"),
    ("job constraints with a surrogate", "job",
     (upload([GOOD]), {}, {"constraints": '[{"type": "exclude", "phonemes": ["\\ud800"]}]'}),
     400, "constraints.0.phonemes.0"),
    ("job constraints deep nesting", "job",
     (upload([GOOD]), {}, {"constraints": json.dumps(NESTED)}), 400, "constraints"),
    # --- the OpenAI Batch API: files
    ("file without purpose", "file", (jsonl(line(GOOD)), {}), 400, "purpose"),
    ("file for fine-tuning", "file", (jsonl(line(GOOD)), {"purpose": "fine-tune"}), 400,
     "purpose"),
    ("file line not JSON", "file", (b"{nope", {"purpose": "batch"}), 400, "file"),
    ("file line nested past the recursion limit", "file", (DEEP.encode(), {"purpose": "batch"}),
     400, "file"),
    ("file not UTF-8", "file", (b"\xff\xfe\x00", {"purpose": "batch"}), 400, "file"),
    ("file over the limit", "file", (b" " * 9000, {"purpose": "batch"}), 413, "file"),
    # --- the OpenAI Batch API: batches
    ("batch without input_file_id", "batches",
     {"endpoint": "/v1/chat/completions", "completion_window": "24h"}, 400, "input_file_id"),
    ("batch unknown input file", "batches",
     {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions",
      "completion_window": "24h"}, 404, "input_file_id"),
    ("batch completion_window as a number", "batches",
     {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions",
      "completion_window": 24}, 400, "completion_window"),
    ("batch metadata values not strings", "batches",
     {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions",
      "completion_window": "24h", "metadata": {"k": 1}}, 400, "metadata.k"),
    ("batch metadata with a surrogate", "batches",
     b'{"input_file_id": "f", "endpoint": "/v1/chat/completions", "completion_window": "24h", '
     b'"metadata": {"k": "\\ud800"}}', 400, "metadata.k"),
    ("batch body nested past the recursion limit", "batches", DEEP.encode(), 400, None),
    ("batch line with a surrogate", "batch_lines",
     b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
     b'{"model": "fake-model", "messages": [{"role": "user", "content": "\\ud800"}]}}', 400,
     "line[1].body.messages.0.content"),
    ("batch line deep nesting", "batch_lines", jsonl(line(chat(tools=NESTED))), 400,
     "line[1].body.tools"),
    ("batch line max_tokens as a string", "batch_lines", jsonl(line(chat(max_tokens="4"))), 400,
     "line[1].body.max_tokens"),
    ("batch line vocab_unit unknown", "batch_lines",
     jsonl(line(chat(vocab_lang="es", vocab_n_words=10, vocab_unit="x"))), 400,
     "line[1].body.vocab_unit"),
    ("batch line NaN", "batch_lines",
     b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
     b'{"model": "fake-model", "messages": [], "temperature": NaN}}', 400,
     "line[1].body.temperature"),
    ("batch line of another endpoint", "batch_lines",
     jsonl({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": completion()}),
     400, "line[1].url"),
    ("batch line surrogate custom_id", "batch_lines",
     b'{"custom_id": "\\ud800", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
     400, "line[1].custom_id"),
]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture(scope="module")
def client(smollm_tokenizer, tmp_path_factory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("bad-inputs")
    settings = settings_for(
        tmp,
        MAX_REQUEST_BYTES=65_536,
        BATCH_MAX_UPLOAD_BYTES=8192,
        BATCH_MAX_ITEMS=4,
        GENERATION_QUEUE_SIZE=8,
        MAX_WORK_TOKENS=16_384,
    )
    app = create_app(settings, engine=FakeEngine(smollm_tokenizer), batch=True)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert wait_ready(c)["status"] == "ready"
        yield c


@pytest.fixture(scope="module")
def access_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("wordlist_generation.access")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def send(client: TestClient, route: str, payload: Any):  # noqa: ANN201
    if route in ("chat", "completions", "preview", "score", "batches"):
        path = {
            "chat": "/v1/chat/completions",
            "completions": "/v1/completions",
            "preview": "/v1/constraints/preview",
            "score": "/v1/score",
            "batches": "/v1/batches",
        }[route]
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return client.post(
            path, content=content, headers={**AUTH, "content-type": "application/json"}
        )
    if route == "job":
        data, query, form = payload
        files: list[tuple[str, tuple[str, bytes]]] = []
        if data is not None:
            files.append(("file", ("items.json", data)))
        if form.pop("second", False):
            files.append(("file", ("more.json", data)))
        return client.post(
            "/v1/batch/jobs", params=query, data=form, files=files or None, headers=AUTH
        )
    if route == "file":
        data, form = payload
        return client.post(
            "/v1/files", data=form, files={"file": ("in.jsonl", data)}, headers=AUTH
        )
    assert route == "batch_lines"
    created = client.post(
        "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", payload)}, headers=AUTH
    )
    if created.status_code != 200:  # refused at upload already
        return created
    body = {
        "input_file_id": created.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    return client.post("/v1/batches", json=body, headers=AUTH)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,route,payload,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, access_log, name, route, payload, status, param) -> None:
    if isinstance(payload, tuple):
        payload = (payload[0], dict(payload[1]), dict(payload[2])) if len(payload) == 3 else (
            payload[0], dict(payload[1]))
    before = len(access_log.lines)
    r = send(client, route, payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] == param, err
    assert r.text.encode("utf-8").decode("utf-8")  # the body is UTF-8 text
    logged = access_log.lines[before:]
    assert logged and logged[-1]["status"] == r.status_code
