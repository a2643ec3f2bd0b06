#!/usr/bin/env python
"""Prompt passes on the CPU: the int4 kernels against the dense copies (`CPU_DENSE_PREFILL`).

Loads the embedded model three times in one process: fp32 (`CPU_QUANTIZATION=none`, the
reference), int4 with dense copies of its projections (the server's default) and int4 without.
For each pass shape (prompts x tokens read: 16 x 53 is a class's 16 distinct prompts read cold),
rounds alternate the two int4 models on the same token ids, each first in turn; the table gives
median milliseconds per pass, the speed-up, and how far each path's next-token distribution
(after the last token of each prompt) is from fp32's: mean KL(fp32 || path) and top-1 agreement.
Called like this, a pass decides its path by its size: fewer than `DENSE_PASS_TOKENS` tokens take
the kernels in both models (the same logits to the bit). The server's scheduler passes its
decision: by the pass's size too, and dense for every chunk of a prompt with that many tokens
to read.

The token ids are real text: the benchmark prompts of `serving_common`, repeated to length.
Prints a table and writes JSON (default bench_results/prefill.json). Run from the repo root:

    TORCH_NUM_THREADS=2 nice .venv/bin/python scripts/bench_prefill.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from serving_common import TOPICS, prompt_text  # noqa: E402

from wordlist_generation.engine.loader import load_model  # noqa: E402
from wordlist_generation.engine.quant import DENSE_PASS_TOKENS  # noqa: E402

SHAPES = [(1, 9), (1, 16), (1, 32), (1, 64), (4, 40), (16, 53), (1, 128), (1, 512), (1, 1024)]


def token_ids(tokenizer, prompts: int, tokens: int) -> torch.Tensor:
    """[prompts, tokens] ids of real text, a different stretch for each prompt."""
    text = " ".join(
        prompt_text(vocab, i, k)
        for k in range(1, 40)
        for i in range(len(TOPICS))
        for vocab in ("unconstrained", "es3000")
    )
    ids = tokenizer(text)["input_ids"]
    assert len(ids) >= prompts * tokens, "not enough text for this shape"
    return torch.tensor([ids[p * tokens : (p + 1) * tokens] for p in range(prompts)])


def timed(model, ids: torch.Tensor) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
    return time.perf_counter() - t0, torch.log_softmax(logits, -1)


def closeness(ref: torch.Tensor, got: torch.Tensor) -> dict:
    kl = (ref.exp() * (ref - got)).sum(-1)
    return {
        "mean_kl_from_fp32": float(f"{float(kl.mean()):.3g}"),
        "top1_agreement_with_fp32": round(
            float((ref.argmax(-1) == got.argmax(-1)).float().mean()), 3
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS") or 2))
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "prefill.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = load_model(None, cpu_quantization="none")
    dense = load_model(None, cpu_quantization="int4", cpu_dense_prefill=True)
    kernels = load_model(None, cpu_quantization="int4", cpu_dense_prefill=False)
    dense_bytes = sum(
        b.numel() * b.element_size()
        for name, b in dense.model.named_buffers()
        if name.endswith("dense_weight")
    )
    models = {"int4": kernels, "dense": dense}
    rows = []
    print(f"threads {args.threads}, {args.rounds} rounds; dense copies {dense_bytes / 1e6:.0f} MB")
    print(
        f"{'shape':>9} {'dense':>5} {'int4 ms':>8} {'dense ms':>8} {'speed-up':>8}  KL int4 / dense"
    )
    with torch.inference_mode():
        for prompts, tokens in SHAPES:
            ids = token_ids(dense.tokenizer, prompts, tokens)
            _, ref = timed(fp32.model, ids)
            times: dict[str, list[float]] = {"int4": [], "dense": []}
            got: dict[str, torch.Tensor] = {}
            for i in range(args.rounds):  # alternating, each first in turn
                for path in ("int4", "dense") if i % 2 == 0 else ("dense", "int4"):
                    seconds, got[path] = timed(models[path].model, ids)
                    times[path].append(seconds)
            row = {
                "prompts": prompts,
                "tokens": tokens,
                "dense_pass": prompts * tokens >= DENSE_PASS_TOKENS,
                "int4_ms": round(1000 * statistics.median(times["int4"]), 1),
                "dense_ms": round(1000 * statistics.median(times["dense"]), 1),
                "int4": closeness(ref, got["int4"]),
                "dense": closeness(ref, got["dense"]),
            }
            row["speedup"] = round(row["int4_ms"] / row["dense_ms"], 2)
            rows.append(row)
            print(
                f"{prompts:>3} x {tokens:<4} {str(row['dense_pass']):>5} {row['int4_ms']:>8} "
                f"{row['dense_ms']:>8} {row['speedup']:>8}  "
                f"{row['int4']['mean_kl_from_fp32']:.2g} / {row['dense']['mean_kl_from_fp32']:.2g}",
                flush=True,
            )
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "rounds": args.rounds,
        "dense_pass_tokens": DENSE_PASS_TOKENS,
        "dense_copy_megabytes": round(dense_bytes / 1e6),
        "passes": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
