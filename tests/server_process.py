"""Start a real uvicorn server in a subprocess and wait until /health says ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        app: str,
        env: dict[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        token: str = "test-token",
        argv: list[str] | None = None,
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.token = token
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SECRET_TOKEN": token,
            "LOG_LEVEL": "INFO",
            "TORCH_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        argv = self.argv or [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--timeout-graceful-shutdown",
            "10",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; log:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.base_url}/health", timeout=2)
                last = r.json()
                if last.get("status") == "ready":
                    return
                if last.get("status") == "error":
                    raise RuntimeError(f"server failed: {last}; log:\n{self.log_tail()}")
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout}s ({last}); log:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def client(self, **kwargs):
        from openai import OpenAI

        kwargs.setdefault("api_key", self.token)
        kwargs.setdefault("max_retries", 0)
        return OpenAI(base_url=f"{self.base_url}/v1", **kwargs)

    def http(self, **kwargs) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=120,
            **kwargs,
        )


def tiny_env(tiny_model_dir: Path, tmp: Path) -> dict[str, str]:
    return {
        "MODEL_NAME": str(tiny_model_dir),
        "SERVED_MODEL_ID": "tiny-test",
        "MODEL_ALIASES": "tiny-alias",
        "DEFAULT_NUM_BEAMS": "2",
        "DEFAULT_MAX_NEW_TOKENS": "16",
        "ALLOWED_MAX_NEW_TOKENS": "4096",
        "MAX_INPUT_TOKENS": "512",
        "GENERATION_MAX_CONCURRENCY": "1",
        "GENERATION_QUEUE_SIZE": "2",
        "MAX_REQUEST_BYTES": "65536",
        "STREAM_KEEPALIVE_SECONDS": "0.5",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
