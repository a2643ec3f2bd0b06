#!/usr/bin/env python
"""Streaming through nginx versus straight to the chat port, and the memory of each worker.

Starts the production shape in a temporary directory (nginx from `scripts/render_nginx.py
--standalone`, `scripts/run_chat.sh` with N workers, `scripts/run_batch.sh`) on the embedded model,
reads each worker's resident memory, then sends the same greedy, streamed, word-list-constrained
request alternately through nginx and directly to the chat port. Reports the medians of time to
the first streamed text and of total time side by side (and of a bare GET /health, the proxy's
own cost), prints a table and writes JSON (default bench_results/nginx.json). Run from the
repository root:

    .venv/bin/python scripts/bench_nginx.py [--runs 7] [--max-tokens 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_deployment_e2e import Deployment, find_nginx  # noqa: E402

PROMPT = "Escribe una historia larga sobre un faro y una tormenta."
MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memory_of(pid: int) -> dict[str, float]:
    """Resident memory of one process in MiB: /proc/<pid>/status, plus Pss (shared pages split)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS:
            out[name] = round(int(value.split()[0]) / 1024, 1)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def memory_report(dep: Deployment) -> dict[str, Any]:
    chat_workers = dep.chat.workers()
    return {
        "chat_supervisor": memory_of(dep.chat.pid) if dep.chat_workers > 1 else None,
        "chat_workers": [memory_of(pid) for pid in chat_workers],
        "batch_worker": memory_of(dep.batch.pid),
    }


def stream_once(client: Any, model: str, max_tokens: int) -> dict[str, float]:
    """One streamed request: seconds to the first text, to the end, and the tokens generated."""
    t0 = time.perf_counter()
    first = None
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"num_beams": 1, "vocab_lang": "es", "vocab_n_words": 1000},
    )
    for chunk in stream:
        if first is None and any(c.delta.content for c in chunk.choices):
            first = time.perf_counter() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - t0
    return {"ttft_s": first if first is not None else total, "total_s": total, "tokens": tokens}


def health_latency_ms(url: str, requests: int) -> float:
    """Median round trip of GET /health on one kept-alive connection: the proxy's own cost."""
    times = []
    with httpx.Client(base_url=url) as http:
        http.get("/health")
        for _ in range(requests):
            t0 = time.perf_counter()
            http.get("/health").raise_for_status()
            times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def median_ms(runs: list[dict[str, float]], key: str) -> float:
    return round(1000 * statistics.median(r[key] for r in runs), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="measured requests per path")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="chat workers")
    ap.add_argument("--threads", type=int, default=1, help="TORCH_NUM_THREADS per process")
    ap.add_argument(
        "--health-requests", type=int, default=200, help="GET /health round trips per path"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "nginx.json")
    args = ap.parse_args()

    nginx = find_nginx()
    if nginx is None:
        subprocess.run([str(REPO / "scripts" / "install_nginx.sh")], check=False)
        nginx = find_nginx()
    if nginx is None:
        raise SystemExit("bench_nginx.py: nginx is not installed (see scripts/install_nginx.sh)")

    root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    env = {
        "MODEL_NAME": "",
        "TORCH_NUM_THREADS": str(args.threads),
        "PREBUILD_PREFIX": "true",
        "PREBUILD_LANGS": "es",
        "PREBUILD_WORD_COUNTS": "1000",
        "DEFAULT_NUM_BEAMS": "2",
    }
    dep = Deployment(root, env, chat_workers=args.workers)
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "model": "embedded",
        "chat_workers": args.workers,
        "torch_threads": args.threads,
        "max_tokens": args.max_tokens,
        "runs_per_path": args.runs,
        "nginx": subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip(),
    }
    try:
        t0 = time.perf_counter()
        dep.start(nginx)
        report["start_to_ready_s"] = round(time.perf_counter() - t0, 2)
        report["memory_mib_at_ready"] = memory_report(dep)

        paths = {"direct": dep.client(f"http://127.0.0.1:{dep.chat_port}"), "nginx": dep.client()}
        model = paths["nginx"].models.list().data[0].id
        for client in paths.values():  # warm-up: every worker, both connections
            for _ in range(args.workers):
                stream_once(client, model, 8)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for i in range(args.runs):
            order = ["nginx", "direct"] if i % 2 == 0 else ["direct", "nginx"]
            for name in order:
                runs[name].append(stream_once(paths[name], model, args.max_tokens))
        report["health_median_ms"] = {
            "direct": health_latency_ms(f"http://127.0.0.1:{dep.chat_port}", args.health_requests),
            "nginx": health_latency_ms(dep.url, args.health_requests),
        }
        report["memory_mib_after_runs"] = memory_report(dep)
        report["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        dep.stop()

    report["runs"] = runs
    report["median_ms"] = {
        name: {"ttft": median_ms(r, "ttft_s"), "total": median_ms(r, "total_s")}
        for name, r in runs.items()
    }
    med = report["median_ms"]
    report["nginx_overhead_ms"] = {
        key: round(med["nginx"][key] - med["direct"][key], 1) for key in ("ttft", "total")
    }

    print(
        f"streamed, greedy, es/1000 constrained, max_tokens {args.max_tokens}, "
        f"{args.workers} chat workers, median of {args.runs} alternating runs, "
        f"load average {report['machine']['load_average_at_end'][0]:.1f} on {os.cpu_count()} cpus"
    )
    print(f"{'':22s} {'direct':>10s} {'nginx':>10s} {'nginx-direct':>13s}")
    for key, label in (("ttft", "first text (ms)"), ("total", "total (ms)")):
        d, n = med["direct"][key], med["nginx"][key]
        print(f"{label:22s} {d:10.1f} {n:10.1f} {n - d:13.1f}")
    health = report["health_median_ms"]
    print(
        f"{'GET /health (ms)':22s} {health['direct']:10.2f} {health['nginx']:10.2f} "
        f"{health['nginx'] - health['direct']:13.2f}"
    )
    tokens = [r["tokens"] for r in runs["direct"] + runs["nginx"]]
    print(f"{'completion tokens':22s} {min(tokens):>10d} {max(tokens):>10d}   (min, max)")
    print()
    print(
        f"{'resident memory (MiB)':22s} {'VmRSS':>8s} {'Pss':>8s} {'RssAnon':>8s} "
        f"{'RssFile':>8s} {'VmHWM':>8s}"
    )
    for when in ("memory_mib_at_ready", "memory_mib_after_runs"):
        mem = report[when]
        rows = [(f"chat worker {i + 1}", m) for i, m in enumerate(mem["chat_workers"])]
        rows.append(("batch worker", mem["batch_worker"]))
        if mem["chat_supervisor"]:
            rows.append(("chat supervisor", mem["chat_supervisor"]))
        print(when.removeprefix("memory_mib_").replace("_", " "))
        for label, m in rows:
            print(
                f"  {label:20s} {m.get('VmRSS', 0):8.1f} {m.get('Pss', 0):8.1f} "
                f"{m.get('RssAnon', 0):8.1f} {m.get('RssFile', 0):8.1f} {m.get('VmHWM', 0):8.1f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
