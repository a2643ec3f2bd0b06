"""Shared fixtures: the real SmolLM2 tokenizer, the embedded model directory, a tiny model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_process import tiny_env

from wordlist_generation.engine.loader import (
    build_tiny_model,
    default_cache_dir,
    embedded_model_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 model converted once to safetensors (cached across runs)."""
    return embedded_model_dir()


@pytest.fixture(scope="session")
def smollm_tokenizer(embedded_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_dir: Path) -> Path:
    """A random-weight 2-layer Llama with the real SmolLM2 tokenizer (fast, realistic masking)."""
    return build_tiny_model(default_cache_dir() / "models" / "tiny-llama-smollm2-v1", embedded_dir)


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path, tmp_path_factory, server_logs: Path):
    """The unified app (chat + batch) on the tiny random model, started once per session."""
    from server_process import ServerProcess

    tmp = tmp_path_factory.mktemp("tiny-server")
    server = ServerProcess(
        "wordlist_generation.main:app", tiny_env(tiny_model_dir, tmp), server_logs / "tiny.log"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reliability_server(tiny_model_dir: Path, tmp_path_factory, server_logs: Path):
    """tests/reliability/'s own server: the unified app on the tiny model, with a random secret and
    a log file of its own (the log checks read only what that suite sent), more rows and a longer
    queue than `tiny_server` (the load test), small batch limits."""
    import secrets

    from server_process import ServerProcess

    tmp = tmp_path_factory.mktemp("reliability-server")
    env = {
        "MODEL_NAME": str(tiny_model_dir),
        "SERVED_MODEL_ID": "tiny-test",
        "DEFAULT_NUM_BEAMS": "1",
        "DEFAULT_MAX_NEW_TOKENS": "8",
        "MAX_NUM_BEAMS": "2",
        "MAX_N": "2",
        "MAX_INPUT_TOKENS": "512",
        "GENERATION_MAX_CONCURRENCY": "8",
        "GENERATION_QUEUE_SIZE": "16",
        "MAX_REQUEST_BYTES": "65536",
        "BATCH_MAX_UPLOAD_BYTES": "65536",
        "BATCH_MAX_ITEMS": "8",
        "STREAM_KEEPALIVE_SECONDS": "0.5",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
    server = ServerProcess(
        "wordlist_generation.main:app",
        env,
        server_logs / "reliability.log",
        token=f"rel-{secrets.token_hex(12)}",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedded_server(embedded_dir: Path, tmp_path_factory, server_logs: Path):
    """The chat app on the real embedded SmolLM2 model, started once per session."""
    from server_process import ServerProcess

    tmp = tmp_path_factory.mktemp("embedded-server")
    env = {
        "MODEL_NAME": "",
        "DEFAULT_NUM_BEAMS": "2",
        "GENERATION_MAX_CONCURRENCY": "1",
        "GENERATION_QUEUE_SIZE": "8",
        "TORCH_NUM_THREADS": "2",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
    server = ServerProcess(
        "wordlist_generation.app_chat:app", env, server_logs / "embedded.log"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def make_client(smollm_tokenizer, tmp_path: Path) -> Iterator[Callable[..., tuple]]:
    """`make_client(engine=None, batch=False, **settings)` -> (started client, its engine)."""
    from fakes import FakeEngine, settings_for, wait_ready
    from fastapi.testclient import TestClient

    from wordlist_generation.apps import create_app

    opened: list[TestClient] = []

    def make(engine=None, *, batch: bool = False, wait: bool = True, **overrides) -> tuple:
        engine = engine or FakeEngine(smollm_tokenizer)
        app = create_app(settings_for(tmp_path, **overrides), engine=engine, batch=batch)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        if wait:
            assert wait_ready(client)["status"] == "ready"
        return client, engine

    yield make
    for client in opened:
        client.__exit__(None, None, None)
