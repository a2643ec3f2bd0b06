#!/usr/bin/env python
"""Cold start to `ready` and greedy tokens/s of the embedded model, through the real server.

Prints a table and writes JSON (default bench_results/generate.json). Run from the repo root:

    .venv/bin/python scripts/bench_generate.py [--runs 5] [--cold-cache]

`--cold-cache` also measures the very first start on a machine (GGUF dequantization + conversion
into an empty cache directory), which later starts skip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from server_process import ServerProcess  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and a storm. Use many paragraphs."


def start(env: dict[str, str], log: Path) -> tuple[ServerProcess, float]:
    t0 = time.perf_counter()
    server = ServerProcess("wordlist_generation.app_chat:app", env, log).start(timeout=600)
    return server, time.perf_counter() - t0


def measure_tokens_per_second(server: ServerProcess, runs: int, max_tokens: int) -> list[dict]:
    results = []
    with server.http() as http:
        body = {
            "model": http.get("/v1/models").json()["data"][0]["id"],
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "num_beams": 1,
        }
        http.post("/v1/chat/completions", json={**body, "max_tokens": 4})  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            r = http.post("/v1/chat/completions", json=body)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            usage = r.json()["usage"]
            results.append(
                {
                    "seconds": dt,
                    "completion_tokens": usage["completion_tokens"],
                    "prompt_tokens": usage["prompt_tokens"],
                    "tokens_per_second": usage["completion_tokens"] / dt,
                }
            )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS", 2)))
    ap.add_argument("--cold-cache", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "generate.json")
    args = ap.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    env = {"MODEL_NAME": "", "TORCH_NUM_THREADS": str(args.threads), "PREBUILD_PREFIX": "false"}
    report: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "max_tokens": args.max_tokens,
    }
    if args.cold_cache:
        cold_env = {**env, "MODEL_CACHE_DIR": str(logs / "model-cache")}
        server, seconds = start(cold_env, logs / "cold.log")
        server.stop()
        report["first_start_with_empty_cache_seconds"] = round(seconds, 2)

    starts = []
    for i in range(3):
        server, seconds = start(env, logs / f"warm-{i}.log")
        starts.append(seconds)
        ready_inside = httpx.get(f"{server.base_url}/health").json().get("ready_seconds")
        if i < 2:
            server.stop()
    report["cold_start_to_ready_seconds"] = [round(s, 2) for s in starts]
    report["cold_start_to_ready_median"] = round(statistics.median(starts), 2)
    report["ready_seconds_reported_by_server"] = ready_inside

    runs = measure_tokens_per_second(server, args.runs, args.max_tokens)
    server.stop()
    report["runs"] = runs
    report["tokens_per_second_median"] = round(statistics.median(r["tokens_per_second"] for r in runs), 2)
    report["completion_tokens_median"] = statistics.median(r["completion_tokens"] for r in runs)

    print(f"{'metric':45s} value")
    if "first_start_with_empty_cache_seconds" in report:
        print(f"{'first start, empty model cache (s)':45s} {report['first_start_with_empty_cache_seconds']}")
    print(f"{'start to ready, cached conversion (s, median)':45s} {report['cold_start_to_ready_median']}")
    print(f"{'  of which inside the server (model+compiler)':45s} {ready_inside}")
    print(f"{'greedy tokens/s (median of ' + str(args.runs) + ')':45s} {report['tokens_per_second_median']}")
    print(f"{'completion tokens per run (median)':45s} {report['completion_tokens_median']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
