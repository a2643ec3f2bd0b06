#!/usr/bin/env bash
# Run scripts/bench_gpu.py on a CUDA machine whose Python already has torch and transformers.
# From the repo root, after scripts/bench_gpu_carry.sh filled var/gpu-carry on a machine with the
# project set up:  bash scripts/bench_gpu_remote.sh [extra bench_gpu.py arguments]
# (carry var/gpu-carry with the working tree). transformers 5.24 and the dependencies it changed
# are installed over an older one there, since the engine needs its `cache` argument.
# The one package the engine's import chain needs beyond torch/transformers/numpy is llguidance:
# installed here from the carried wheel (no index, no deps) into a private --target directory that
# goes first on PYTHONPATH. Results (gpu.json, logs) go to $OUT (default var/gpu-out).
set -u
cd "$(dirname "$0")/.."
CARRY=var/gpu-carry
OUT="${OUT:-var/gpu-out}"
mkdir -p "$OUT"

main() {
    SECONDS=0
    echo "== $(date -u +%FT%TZ) run_gpu.sh in $(pwd)"
    PY=""
    for candidate in "${PYTHON:-}" python3 python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null && "$candidate" -c "import torch, transformers" 2>/dev/null; then
            PY="$candidate"
            break
        fi
    done
    if [ -z "$PY" ]; then
        echo "no python with torch and transformers found"; return 3
    fi
    echo "== python: $(command -v "$PY")"; "$PY" -V
    nvidia-smi -L || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
    ldd --version 2>/dev/null | head -1
    "$PY" - <<'EOF'
import inspect, torch, transformers
from transformers import LlamaForCausalLM
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("transformers", transformers.__version__)
print("forward takes `cache`:", "cache" in inspect.signature(LlamaForCausalLM.forward).parameters)
EOF

    SITE="$(mktemp -d /tmp/gpu-site.XXXXXX)"
    WHEEL="$(ls "$CARRY"/wheels/llguidance-*.whl | head -1)"
    echo "== installing $WHEEL into $SITE"
    if ! timeout 90 "$PY" -m pip install --no-index --find-links "$CARRY/wheels" --no-deps \
            --disable-pip-version-check --no-compile --target "$SITE" "$WHEEL"; then
        echo "pip install failed (no pip, or the wheel's platform tag refused): unpacking the wheel"
        "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
            "$WHEEL" "$SITE" || { echo "could not unpack $WHEEL"; return 4; }
    fi
    echo "== installing the carried transformers 5.24 and its changed dependencies into $SITE"
    timeout 120 "$PY" -m pip install --no-index --no-deps --disable-pip-version-check --no-compile \
        --target "$SITE" --upgrade "$CARRY"/tf/*.whl 2>&1 | tail -2
    export PYTHONPATH="$SITE:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import inspect, transformers; from transformers import LlamaForCausalLM; print('transformers', transformers.__version__, transformers.__file__, 'cache:', 'cache' in inspect.signature(LlamaForCausalLM.forward).parameters)"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/gpu-cache}"
    "$PY" -c "import llguidance, llguidance.hf, llguidance.numpy; print('llguidance from', llguidance.__file__)" \
        || echo "WARNING: llguidance does not import; the es3000 rows will fail"

    grep -q "device=scores.device" wordlist_generation/engine/scheduler.py \
        || echo "WARNING: engine/scheduler.py builds penalty ids on the CPU: es3000 rows will fail on CUDA"
    local left=$((330 - SECONDS))  # the whole script stays within 330 s
    echo "== $(date -u +%FT%TZ) bench_gpu.py $* (timeout ${left}s)"
    timeout -k 10 "$left" "$PY" scripts/bench_gpu.py --tokenizer "$CARRY/tokenizer" --out "$OUT/gpu.json" "$@"
    local rc=$?
    echo "== $(date -u +%FT%TZ) bench_gpu.py exit status $rc"
    nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null || true
    return "$rc"
}

main "$@" 2>&1 | tee "$OUT/run_gpu.log"
exit "${PIPESTATUS[0]}"
