"""A pool of upstream OpenAI-compatible servers (vLLM): which one takes a request, and which are up.

- **Choice:** the least busy server that is up (fewest requests this gateway has in flight on
  it); ties go round-robin, so an idle pool spreads requests evenly.
- **Health:** a daemon thread checks every server each `health_interval` seconds: `/health` must
  answer 200 and `/v1/models` must list the served model. A server that fails a check, or that a
  request could not reach, is out until a later check finds it well again.
- **Failover:** the engine asks for another server (`acquire(exclude=...)`) when the first one
  failed before anything was streamed; this module only keeps the books.

Thread-safe: requests acquire servers on the event loop, scoring in worker threads, checks in the
health thread. The API key is sent as a bearer header and never logged or reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import UpstreamUnavailable

log = logging.getLogger(__name__)


@dataclass
class Upstream:
    """One vLLM server as the gateway sees it."""

    url: str
    up: bool = False
    in_flight: int = 0
    #: Model ids its /v1/models lists, with each one's `root` (the path it was loaded from) and
    #: `max_model_len`.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_error: str | None = None
    checked_at: float | None = None
    #: Requests that failed on it (connection refused, dropped, 5xx) since the gateway started.
    failures: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "up": self.up,
            "in_flight": self.in_flight,
            "failures": self.failures,
            "last_error": self.last_error,
            "checked_seconds_ago": (
                None if self.checked_at is None else round(time.monotonic() - self.checked_at, 1)
            ),
        }


class UpstreamPool:
    def __init__(
        self,
        urls: Collection[str],
        *,
        api_key: str = "",
        model: str = "",
        connect_timeout: float = 5.0,
        health_interval: float = 10.0,
    ) -> None:
        if not urls:
            raise ValueError("an upstream pool needs at least one URL")
        self.upstreams = [Upstream(url.rstrip("/")) for url in urls]
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self._lock = threading.Lock()
        self._turn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- choice

    def acquire(self, exclude: Collection[Upstream] = ()) -> Upstream:
        """The least busy server that is up (not one of `exclude`), counted as busy with one more
        request until `release`; `UpstreamUnavailable` (503) when there is none."""
        with self._lock:
            candidates = [u for u in self.upstreams if u.up and u not in exclude]
            if not candidates:
                raise self.unavailable(with_reasons=not exclude)
            self._turn += 1
            n = len(self.upstreams)
            chosen = min(
                candidates,
                key=lambda u: (u.in_flight, (self.upstreams.index(u) - self._turn) % n),
            )
            chosen.in_flight += 1
            return chosen

    def unavailable(self, *, with_reasons: bool = True) -> UpstreamUnavailable:
        """The 503 for a request no server can take (naming why each is out)."""
        down = [u for u in self.upstreams if not u.up]
        reason = "; ".join(f"{u.url}: {u.last_error or 'down'}" for u in down)
        return UpstreamUnavailable(
            "no upstream model server is available"
            + (f" ({reason})" if reason and with_reasons else ""),
            headers={"Retry-After": str(max(1, round(self.health_interval)))},
        )

    def release(self, upstream: Upstream) -> None:
        with self._lock:
            upstream.in_flight = max(0, upstream.in_flight - 1)

    def mark_down(self, upstream: Upstream, reason: str) -> None:
        """Take a server out after a request failed on it; the health thread retries it."""
        with self._lock:
            was_up = upstream.up
            upstream.up = False
            upstream.failures += 1
            upstream.last_error = reason
        if was_up:
            log.warning("upstream %s taken out: %s", upstream.url, reason)

    @property
    def up_count(self) -> int:
        return sum(1 for u in self.upstreams if u.up)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "up": self.up_count,
                "total": len(self.upstreams),
                "servers": [u.summary() for u in self.upstreams],
            }

    def served(self) -> dict[str, dict[str, Any]]:
        """Every model id some server that is up lists, with its /v1/models entry."""
        with self._lock:
            found: dict[str, dict[str, Any]] = {}
            for u in self.upstreams:
                if u.up:
                    for name, entry in u.models.items():
                        found.setdefault(name, entry)
            return found

    # ----------------------------------------------------------------- health

    def check(self, upstream: Upstream) -> bool:
        """One health check of `upstream` (blocking): /health, then /v1/models."""
        error: str | None = None
        models: dict[str, dict[str, Any]] = {}
        timeout = httpx.Timeout(self.connect_timeout * 2, connect=self.connect_timeout)
        try:
            health = httpx.get(f"{upstream.url}/health", headers=self.headers, timeout=timeout)
            if health.status_code != 200:
                error = f"/health answered {health.status_code}"
            else:
                listed = httpx.get(
                    f"{upstream.url}/v1/models", headers=self.headers, timeout=timeout
                )
                if listed.status_code != 200:
                    error = f"/v1/models answered {listed.status_code}"
                else:
                    models = {
                        str(m.get("id")): m
                        for m in listed.json().get("data", [])
                        if isinstance(m, dict)
                    }
                    if self.model and self.model not in models:
                        error = f"does not serve {self.model!r} (it serves {sorted(models)})"
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with self._lock:
            was_up = upstream.up
            upstream.up = error is None
            upstream.last_error = error
            upstream.checked_at = time.monotonic()
            if models:
                upstream.models = models
        if was_up != upstream.up:
            if upstream.up:
                log.info("upstream %s is up", upstream.url)
            else:
                log.warning("upstream %s is down: %s", upstream.url, error)
        return upstream.up

    def check_all(self) -> int:
        """Check every server now (blocking); the number that are up."""
        for upstream in self.upstreams:
            self.check(upstream)
        return self.up_count

    def start(self) -> None:
        """Check every server each `health_interval` seconds, in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.health_interval):
                self.check_all()

        self._thread = threading.Thread(target=loop, name="upstream-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout * 4)
            self._thread = None
