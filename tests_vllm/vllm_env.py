"""Where the vLLM environment is and what its test server is called."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The vLLM venv's interpreter (scripts/setup_vllm.sh; `VLLM_VENV` names another venv).
VLLM_PYTHON = REPO / os.environ.get("VLLM_VENV", ".venv-vllm") / "bin" / "python"
#: The model name the test server answers to.
SERVED = "smollm2-vllm"
