"""`/health` says `ready` only when every route of the app works."""

from __future__ import annotations

import asyncio
import time

from fakes import AUTH

from wordlist_generation.batch import JobManager


def test_ready_means_the_batch_routes_work(make_client, monkeypatch):
    """The batch worker starts after the model: while it starts, /health must not say ready
    (a job posted then would get 503 'the batch worker is starting')."""
    real_start = JobManager.start

    async def slow_start(self) -> None:
        await asyncio.sleep(1.0)
        await real_start(self)

    monkeypatch.setattr(JobManager, "start", slow_start)
    client, _ = make_client(batch=True, wait=False)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get("/health").json()["status"]
        seen.append(status)
        if status != "loading":
            break
        time.sleep(0.01)
    assert seen[-1] == "ready"
    r = client.get("/v1/batch/jobs", headers=AUTH)
    assert r.status_code == 200, r.json()
    r = client.get("/v1/batches", headers=AUTH)
    assert r.status_code == 200, r.json()
