#!/usr/bin/env python
"""Batch-job throughput by pipeline size, through the real batch service on the embedded model.

For each `BATCH_JOB_PIPELINE_SIZE` a fresh `app_batch` process runs one job of `--items` chat
requests (greedy: `num_beams` 1, `max_tokens` 64 by default), unconstrained and then restricted to
a word list. A job is timed from its upload being accepted (validation and constraint compilation
are done by then) until its status says `completed`. Prints a table with items/s and the speed-up
over pipeline size 1, and writes JSON (default bench_results/batch.json). From the repo root:

    nice -n 10 .venv/bin/python scripts/bench_batch.py [--sizes 1,4,8,16] [--items 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from server_process import ServerProcess  # noqa: E402

TOPICS = [
    "a lighthouse keeper",
    "a lost dog",
    "the first day of school",
    "a storm at sea",
    "a market in the morning",
    "an old clock",
    "a train journey",
    "a small garden",
    "a letter from a friend",
    "a winter night",
    "a baker and his bread",
    "a mountain village",
    "a broken bicycle",
    "a birthday party",
    "a quiet library",
    "a fisherman's boat",
]
STYLES = [
    "Write a short story about {}.",
    "Describe {} in a few sentences.",
    "Tell a child about {}.",
    "Write the opening of a novel about {}. Keep it simple and warm.",
]


def prompts(n: int) -> list[str]:
    """Varied lengths on purpose: left padding is part of what batching costs."""
    all_prompts = [style.format(topic) for style in STYLES for topic in TOPICS]
    return [all_prompts[i % len(all_prompts)] for i in range(n)]


def run_job(
    http: httpx.Client, model: str, texts: list[str], max_tokens: int, vocab: dict[str, Any]
) -> dict[str, Any]:
    items = [{"model": model, "messages": [{"role": "user", "content": t}]} for t in texts]
    params = {"max_tokens": max_tokens, "num_beams": 1, **vocab}
    files = {"file": ("bench.json", json.dumps(items).encode(), "application/json")}
    r = http.post("/v1/batch/jobs", params=params, files=files)
    r.raise_for_status()
    t0 = time.perf_counter()
    job_id = r.json()["job_id"]
    while True:
        status = http.get(f"/v1/batch/jobs/{job_id}").json()
        if status["status"] in {"completed", "failed", "cancelled"}:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    if status["status"] != "completed" or status["failed"]:
        raise RuntimeError(f"bench job did not complete cleanly: {status}")
    results = http.get(f"/v1/batch/jobs/{job_id}/results").json()
    tokens = sum(r["usage"]["completion_tokens"] for r in results)
    return {
        "seconds": round(seconds, 3),
        "items_per_second": round(len(texts) / seconds, 3),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1,4,8,16", help="pipeline sizes (comma-separated)")
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--vocab", default="en:2000", help="LANG:N for the constrained runs")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS", 2)))
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "batch.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lang, n_words = args.vocab.split(":")
    modes = {"unconstrained": {}, "constrained": {"vocab_lang": lang, "vocab_n_words": n_words}}
    texts = prompts(args.items)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))

    runs: list[dict[str, Any]] = []
    for size in sizes:
        env = {
            "MODEL_NAME": "",
            "TORCH_NUM_THREADS": str(args.threads),
            "BATCH_JOB_PIPELINE_SIZE": str(size),
            "BATCH_MAX_ITEMS": str(max(args.items, 1000)),
            "BATCH_JOB_DIR": str(work / f"jobs-{size}"),
            "BATCH_JOB_TEMP_DIR": str(work / f"uploads-{size}"),
            "PREBUILD_PREFIX": "false",
        }
        server = ServerProcess(
            "wordlist_generation.app_batch:app", env, work / f"server-{size}.log"
        ).start(timeout=600)
        try:
            with server.http() as http:
                model = http.get("/v1/models").json()["data"][0]["id"]
                for mode, vocab in modes.items():
                    run_job(http, model, texts[:4], 16, vocab)  # warm-up (and compile the list)
                    result = run_job(http, model, texts, args.max_tokens, vocab)
                    runs.append({"mode": mode, "pipeline_size": size, **result})
                    print(f"  {mode:13s} size {size:2d}: {result}", flush=True)
        finally:
            server.stop()

    for run in runs:
        base = next(
            (r for r in runs if r["mode"] == run["mode"] and r["pipeline_size"] == sizes[0]), None
        )
        run["speedup_vs_size_" + str(sizes[0])] = (
            round(run["items_per_second"] / base["items_per_second"], 2) if base else None
        )

    key = "speedup_vs_size_" + str(sizes[0])
    print()
    print(
        f"{'mode':14s} {'size':>4s} {'seconds':>8s} {'items/s':>8s} {'tokens/s':>9s} {'speed-up':>9s}"
    )
    for r in runs:
        print(
            f"{r['mode']:14s} {r['pipeline_size']:4d} {r['seconds']:8.1f} "
            f"{r['items_per_second']:8.3f} {r['tokens_per_second']:9.1f} {r[key]:8.2f}x"
        )
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": "embedded (SmolLM2-135M-Instruct)",
        "threads": args.threads,
        "items": args.items,
        "max_tokens": args.max_tokens,
        "num_beams": 1,
        "vocab": args.vocab,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
