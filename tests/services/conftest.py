"""Apps built around a fake engine, in-process with `TestClient` (no model, no server process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeEngine, settings_for, wait_ready
from fastapi.testclient import TestClient

from wordlist_generation.apps import create_app


@pytest.fixture
def make_client(
    smollm_tokenizer, tmp_path: Path
) -> Iterator[Callable[..., tuple[TestClient, FakeEngine]]]:
    """`make_client(engine=None, batch=False, **settings)` -> (started client, its engine)."""
    opened: list[TestClient] = []

    def make(
        engine: FakeEngine | None = None, *, batch: bool = False, wait: bool = True, **overrides
    ) -> tuple[TestClient, FakeEngine]:
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
