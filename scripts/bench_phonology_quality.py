#!/usr/bin/env python
"""Phonological answers a clinician can use: no errors, target words inside sentences.

Runs the real chat server on the embedded model and sends every combination of
`tests/constraints/phonology_cases.QUALITY_COMBINATIONS` with each prompt and each `max_tokens`,
greedy (`num_beams: 1`), several requests at a time (continuous batching). Per answer it records
the status (a 400 is a `max_tokens` refused at admission), `finish_reason`, the re-check's verdict
and the *placement*: a positive constraint is placed when the words that satisfy it (the re-check's
minimal pair or set, or `min_count` of its include words) each have a word before and after them in
one sentence (sentences end at `. ! ? …` and line breaks). Prints a table and writes every answer
to JSON (default bench_results/phonology_quality.json) so that a reader can judge them.

    .venv/bin/python scripts/bench_phonology_quality.py [--max-tokens 64,128,256] [--parallel 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "constraints"))

from phonology_cases import QUALITY_COMBINATIONS  # noqa: E402
from server_process import ServerProcess  # noqa: E402

PROMPTS = [
    "Tell me a short story about a dog and a child.",
    "What do you do on a Sunday morning?",
    "Describe a rainy day in the city.",
]
CONTRASTIVE = ("contrastive_minpair", "contrastive_maxopp", "contrastive_multopp")
SENTENCE_END = re.compile(r"[.!?…\n]+")
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def inside_words(text: str) -> set[str]:
    """Words (lowercase) with at least one occurrence that has a word before and after it in the
    same sentence."""
    out: set[str] = set()
    for sentence in SENTENCE_END.split(text):
        words = [w.lower() for w in WORD.findall(sentence)]
        out.update(words[1:-1])
    return out


def placement(text: str, verdicts: list[dict[str, Any]]) -> dict[int, bool]:
    """Per positive constraint (by index): is it satisfied by words placed inside sentences?"""
    inside = inside_words(text)
    out: dict[int, bool] = {}
    for v in verdicts:
        d = v.get("details", {})
        if v["type"] == "include":
            out[v["constraint_index"]] = sum(w in inside for w in d["words"]) >= d["needed"]
        elif v["type"] in CONTRASTIVE:
            groups = d.get("pairs_found") or d.get("sets_found") or []
            out[v["constraint_index"]] = any(all(w in inside for w in g) for g in groups)
    return out


def ask(server: ServerProcess, name: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    constraints = QUALITY_COMBINATIONS[name]
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "num_beams": 1,
        "constraints": constraints,
    }
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=3600) as http:
        r = http.post("/v1/chat/completions", json=body)
    record: dict[str, Any] = {
        "combination": name,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "status": r.status_code,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if r.status_code != 200:
        record["error"] = r.json().get("error")
        return record
    data = r.json()
    choice, info = data["choices"][0], data["constraint"]
    text = choice["message"]["content"]
    verdicts = info["checks"][0]["verdicts"]
    placed = placement(text, verdicts)
    types = {i: c["type"] for i, c in enumerate(constraints)}
    record |= {
        "finish_reason": choice["finish_reason"],
        "compliant": info["compliant"],
        "errors": info.get("errors", []),
        "violations": info["violations"],
        "chosen": info.get("required_words", []),
        "chosen_used": all(
            w in {x.lower() for x in WORD.findall(text)} for w in info.get("required_words", [])
        ),
        "completion_tokens": data["usage"]["completion_tokens"],
        "placed": all(placed.values()) if placed else None,
        "placed_by_type": {types[i]: ok for i, ok in placed.items()},
        "text": text,
    }
    return record


def pct(values: list[bool]) -> str:
    return f"{100 * sum(values) / len(values):5.1f}" if values else "    -"


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in records if r["status"] == 200]
    by_type: dict[str, list[bool]] = {}
    for r in answered:
        for t, ok in r["placed_by_type"].items():
            by_type.setdefault(t, []).append(ok)
    return {
        "requests": len(records),
        "answers": len(answered),
        "refused_400": sum(r["status"] == 400 for r in records),
        "other_status": sum(r["status"] not in (200, 400) for r in records),
        "finish_error": sum(r["finish_reason"] == "error" for r in answered),
        "not_compliant": sum(not r["compliant"] for r in answered),
        "placed": sum(bool(r["placed"]) for r in answered if r["placed"] is not None),
        "with_targets": sum(r["placed"] is not None for r in answered),
        "placement_by_type": {
            t: {"answers": len(v), "placed": sum(v), "percent": round(100 * sum(v) / len(v), 1)}
            for t, v in sorted(by_type.items())
        },
        "chosen_used": sum(r["chosen_used"] for r in answered),
        "median_completion_tokens": statistics.median(r["completion_tokens"] for r in answered)
        if answered
        else None,
    }


def print_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(
        f"{'combination':34s} {'n':>3s} {'400':>4s} {'error':>5s} {'compl%':>6s} {'placed%':>7s} {'tokens':>6s}"
    )
    for name in QUALITY_COMBINATIONS:
        rs = [r for r in records if r["combination"] == name]
        ok = [r for r in rs if r["status"] == 200]
        placed = [bool(r["placed"]) for r in ok if r["placed"] is not None]
        tokens = statistics.median(r["completion_tokens"] for r in ok) if ok else 0
        print(
            f"{name:34s} {len(rs):3d} {sum(r['status'] == 400 for r in rs):4d} "
            f"{sum(r['finish_reason'] == 'error' for r in ok):5d} "
            f"{pct([r['compliant'] for r in ok]):>6s} {pct(placed):>7s} {tokens:6.0f}"
        )
    print()
    for t, v in summary["placement_by_type"].items():
        print(f"placement {t:22s} {v['placed']:3d}/{v['answers']:<3d} = {v['percent']:5.1f} %")
    print(
        f"requests {summary['requests']}, answers {summary['answers']}, 400 {summary['refused_400']}, "
        f"finish_reason error {summary['finish_error']}, not compliant {summary['not_compliant']}, "
        f"all targets placed {summary['placed']}/{summary['with_targets']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-tokens", default="64,128,256")
    ap.add_argument("--combinations", default=",".join(QUALITY_COMBINATIONS))
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument(
        "--parallel", type=int, default=8, help="requests in flight (rows decoded together)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "phonology_quality.json")
    args = ap.parse_args()

    jobs = [
        (name, prompt, int(mt))
        for mt in args.max_tokens.split(",")
        for name in args.combinations.split(",")
        for prompt in PROMPTS[: args.prompts]
    ]
    tmp = Path(tempfile.mkdtemp(prefix="bench-phonology-quality-"))
    env = {
        "MODEL_NAME": "",
        "TORCH_NUM_THREADS": str(args.threads),
        "GENERATION_MAX_CONCURRENCY": str(args.parallel),
        "GENERATION_QUEUE_SIZE": str(len(jobs)),
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
    server = ServerProcess("wordlist_generation.app_chat:app", env, tmp / "server.log").start(
        timeout=600
    )
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.parallel) as pool:
            records = list(pool.map(lambda job: ask(server, *job), jobs))
    finally:
        server.stop()
    wall = time.perf_counter() - t0
    summary = summarize(records)
    print_table(records, summary)
    print(f"{len(jobs)} requests in {wall:.0f} s")
    out = {
        "benchmark": "phonology_quality",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "note": "2-core CPU shared with other work while measuring",
        },
        "params": {
            "max_tokens": args.max_tokens,
            "num_beams": 1,
            "parallel": args.parallel,
            "prompts": PROMPTS[: args.prompts],
        },
        "combinations": QUALITY_COMBINATIONS,
        "wall_seconds": round(wall, 1),
        "summary": summary,
        "answers": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
