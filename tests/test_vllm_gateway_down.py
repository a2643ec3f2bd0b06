"""A gateway (ENGINE=vllm) whose upstream is down, as a real server process: it starts (the
tokenizer is local), says so on /health with 503, answers every generation with an OpenAI-shaped
503 naming no secret, still refuses what vLLM cannot run with a 400, and never logs the upstream
API key. The answers of a running vLLM are tested in tests_vllm/ (`make test-vllm`)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from server_process import ServerProcess, free_port

KEY = "sk-upstream-secret-7f3a9"
ES = {"vocab_lang": "es", "vocab_n_words": 1000}


@pytest.fixture(scope="module")
def gateway(tiny_model_dir: Path, tmp_path_factory, server_logs: Path):
    tmp = tmp_path_factory.mktemp("gateway-down")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        "ENGINE": "vllm",
        "VLLM_URLS": f"{dead},{dead}/",
        "VLLM_MODEL": "upstream-model",
        "VLLM_TOKENIZER": str(tiny_model_dir),
        "VLLM_API_KEY": KEY,
        "VLLM_CONNECT_TIMEOUT_SECONDS": "0.5",
        "VLLM_HEALTH_INTERVAL_SECONDS": "1",
        "LEXICON_PRELOAD": "false",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
    server = ServerProcess(
        "wordlist_generation.app_chat:app", env, server_logs / "gateway-down.log"
    ).start(timeout=120)
    yield server
    server.stop()


def test_health_is_503_with_the_upstreams_state(gateway) -> None:
    with gateway.http() as http:
        r = http.get("/health")
        models = http.get("/v1/models").json()
    body = r.json()
    assert r.status_code == 503 and body["status"] == "ready" and body["engine"] == "vllm"
    assert body["upstreams"]["up"] == 0 and body["upstreams"]["total"] == 2
    assert all(s["last_error"] for s in body["upstreams"]["servers"])
    assert KEY not in r.text
    assert [m["id"] for m in models["data"]] == ["upstream-model"]


@pytest.mark.parametrize("stream", [False, True])
def test_generation_is_a_503_before_anything_is_streamed(gateway, stream: bool) -> None:
    client = gateway.client(timeout=30)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model="upstream-model",
            messages=[{"role": "user", "content": "Hola."}],
            max_tokens=8,
            stream=stream,
            extra_body=ES,
        )
    assert err.value.status_code == 503
    assert err.value.body["code"] == "upstream_unavailable"
    assert KEY not in str(err.value.body)
    assert err.value.response.headers.get("retry-after")


def test_beams_are_refused_by_name_even_while_the_pool_is_down(gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(
            model="upstream-model",
            messages=[{"role": "user", "content": "Hola."}],
            max_tokens=8,
            extra_body={"num_beams": 3},
        )
    assert err.value.body["param"] == "num_beams"


def test_the_upstream_key_reaches_no_log(gateway) -> None:
    gateway.stop()  # flushes the log
    assert KEY not in gateway.log_path.read_text(errors="replace")
