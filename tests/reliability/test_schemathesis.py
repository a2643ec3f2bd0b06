"""schemathesis against the live server (tiny model): every operation of /openapi.json, with a
fixed seed and example count, must never answer 5xx and must answer what the document says
(status, content type, body schema)."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MODEL = "tiny-test"
#: Examples per operation (about 20 operations): with the tiny model the run takes about a minute.
EXAMPLES = 25
SEED = 20_251_130
#: Generation parameters capped so that a valid request stays a short generation.
CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "n": 2, "num_beams": 2, "drafts": 2}
#: Word lists compiled by generated requests stay small (each new size is a compilation).
MAX_VOCAB_WORDS = 300

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def api_schema(reliability_server) -> Any:
    schema = schemathesis.openapi.from_url(f"{reliability_server.base_url}/openapi.json")

    @schema.hook("map_body")
    def cap_generation(_context: Any, body: Any) -> Any:
        """Keep valid requests cheap: `max_tokens` and friends capped, small word lists; and name
        the served model, so that a valid chat request generates rather than being a 404."""
        if isinstance(body, dict):
            if isinstance(body.get("model"), str):
                body["model"] = MODEL
            for name, cap in CAPS.items():
                value = body.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                    body[name] = cap
            size = body.get("vocab_n_words")
            if isinstance(size, int) and not isinstance(size, bool) and size > MAX_VOCAB_WORDS:
                body["vocab_n_words"] = MAX_VOCAB_WORDS
        return body

    @schema.hook("map_query")
    def cap_job_query(_context: Any, query: Any) -> Any:
        if isinstance(query, dict):
            for name, cap in (("max_tokens", 4), ("num_beams", 2)):
                value = query.get(name)
                if isinstance(value, int) and value > cap:
                    query[name] = cap
            size = query.get("vocab_n_words")
            if isinstance(size, int) and size > MAX_VOCAB_WORDS:
                query["vocab_n_words"] = MAX_VOCAB_WORDS
        return query

    return schema


def run_operation(
    operation: Any, server: Any, mode: GenerationMode, hooks: Any, stats: dict[str, Any]
) -> None:
    """`EXAMPLES` cases of one operation in one generation mode, each sent and checked; failures
    are collected (with the request that caused them), not raised, so that every operation runs
    and hypothesis does not replay them while shrinking."""
    headers = {"Authorization": f"Bearer {server.token}"}

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.seed(SEED)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, hooks=hooks))
    def run(case: Any) -> None:
        response = case.call(base_url=server.base_url, headers=headers, timeout=60)
        stats["requests"] += 1
        stats["statuses"][response.status_code] = stats["statuses"].get(response.status_code, 0) + 1
        key = (operation.label, response.status_code)
        stats["by_operation"][key] = stats["by_operation"].get(key, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # one failure, or several
            stats["failures"].append(
                f"{operation.label} ({mode.value}) -> {response.status_code}: "
                f"{str(exc)[:400]}\n    {case.as_curl_command(headers)}"
            )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode == GenerationMode.NEGATIVE



def test_every_operation_keeps_its_contract(reliability_server, api_schema) -> None:
    stats: dict[str, Any] = {"requests": 0, "statuses": {}, "by_operation": {}, "failures": []}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, reliability_server, mode, api_schema.hooks, stats)
    print(
        f"schemathesis: {stats['requests']} requests, statuses {sorted(stats['statuses'].items())}"
        f", {len(stats['failures'])} failures"
    )
    for (label, status), count in sorted(stats["by_operation"].items()):
        print(f"  {label}: {status} x {count}")
    assert not stats["failures"], "\n".join(stats["failures"][:20])
    assert not any(status >= 500 for status in stats["statuses"])
