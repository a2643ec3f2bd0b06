#!/usr/bin/env bash
# Fill var/gpu-carry with what scripts/bench_gpu_remote.sh needs on a CUDA machine that has torch
# and an older transformers but no internet: llguidance, transformers and the dependencies whose
# versions it raised (wheels for CPython 3.12 on x86_64 Linux, the versions of .venv), and the
# embedded model's tokenizer files (no weights: the benchmark's model has random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CARRY=var/gpu-carry
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/tf" "$CARRY/tokenizer"
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
fetch() {  # fetch DIR PACKAGE...
    local dir=$1; shift
    for pkg in "$@"; do
        "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
            --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
            --platform manylinux2014_x86_64 -d "$dir" "$pkg==$(version "$pkg")"
    done
}
fetch "$CARRY/wheels" llguidance
fetch "$CARRY/tf" transformers huggingface_hub tokenizers safetensors regex typer hf_xet \
    shellingham httpx2 httpcore2 truststore h11
"$PY" - "$CARRY/tokenizer" <<'PYEOF'
import shutil, sys
from wordlist_generation.engine.loader import embedded_model_dir
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    shutil.copy(embedded_model_dir() / name, sys.argv[1])
PYEOF
du -sh "$CARRY"
