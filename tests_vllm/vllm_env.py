"""Where the vLLM environment is, what its test server is called, and how to start one (for
the tests of this directory and scripts/bench_serving.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
#: The vLLM venv's interpreter (scripts/setup_vllm.sh; `VLLM_VENV` names another venv).
VLLM_PYTHON = REPO / os.environ.get("VLLM_VENV", ".venv-vllm") / "bin" / "python"
#: The model name the test server answers to.
SERVED = "smollm2-vllm"


def vllm_model_dir(target: Path) -> Path:
    """The embedded model's converted directory as vLLM takes it: the same files (linked), with
    a `config.json` that has no `quantization_config` (of type gguf, which vLLM refuses for a
    safetensors checkpoint)."""
    from wordlist_generation.engine.loader import embedded_model_dir

    source = embedded_model_dir()
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "config.json":
            (target / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    config.pop("quantization_config", None)
    (target / "config.json").write_text(json.dumps(config, indent=1))
    return target


class VLLMServer:
    """One vLLM OpenAI server in a subprocess (started by `start`, stopped by `stop`)."""

    def __init__(self, model: Path, log: Path, *, max_model_len: int = 2048) -> None:
        from server_process import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.argv = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--served-model-name", SERVED, "--host", "127.0.0.1",
            "--port", str(self.port), "--max-model-len", str(max_model_len),
            "--structured-outputs-config.backend", "guidance",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 900) -> VLLMServer:
        if not VLLM_PYTHON.exists():
            raise RuntimeError(
                f"{VLLM_PYTHON} is missing: run scripts/setup_vllm.sh (make test-vllm does)"
            )
        self.log.parent.mkdir(exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        t0 = time.monotonic()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"vLLM not ready after {timeout:.0f} s; see {self.log}")
            time.sleep(2)
        print(
            f"\nvLLM on port {self.port} ready after {time.monotonic() - t0:.0f} s", file=sys.stderr
        )
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
