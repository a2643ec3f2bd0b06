#!/usr/bin/env python
"""Two runs of scripts/bench_quality.py (server mode) side by side, row by row: does a serving
setting (say CPU_QUANTIZATION=int4 against none) change the answers people get?

Per row present in both runs: how many answers are word-for-word identical, the median over prompts
of (perplexity in B / perplexity in A) (perplexity under the fp32 unconstrained model, as the
benchmark scores it), and each run's usable / repeats / distinct / relevance / violations. Prints a
table and writes JSON:

    .venv/bin/python scripts/compare_quality.py A.json B.json [--out bench_results/X.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

FIELDS = ("usable", "repeats", "distinct", "perplexity_median", "relevance_mean", "mean_words")


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    pairs = list(zip(a["samples"], b["samples"], strict=True))
    assert all(x["prompt"] == y["prompt"] for x, y in pairs), "the runs asked different prompts"
    ratios = [
        y["perplexity"] / x["perplexity"]
        for x, y in pairs
        if x.get("perplexity") and y.get("perplexity")
    ]
    return {
        "row": a["row"],
        "prompts": len(pairs),
        "identical_answers": sum(x["text"] == y["text"] for x, y in pairs),
        "perplexity_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
        "violations": [sum(len(s.get("violations") or []) for s in r["samples"]) for r in (a, b)],
        **{f: [a.get(f), b.get(f)] for f in FIELDS},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in (args.a, args.b)]
    b_rows = {r["row"]: r for r in runs[1]["rows"]}
    rows = [compare_rows(r, b_rows[r["row"]]) for r in runs[0]["rows"] if r["row"] in b_rows]
    print(f"A = {args.a}, B = {args.b}")
    print(
        f"{'row':>26} {'same':>7} {'ppl B/A':>7} {'usable':>11} {'repeats':>11} "
        f"{'distinct':>13} {'ppl median':>13} {'violations':>10}"
    )
    for r in rows:
        print(
            f"{r['row']:>26} {r['identical_answers']:>3}/{r['prompts']:<3} "
            f"{r['perplexity_ratio_median'] or 0:>7.3f} "
            f"{r['usable'][0]:>5} {r['usable'][1]:>5} {r['repeats'][0]:>5} {r['repeats'][1]:>5} "
            f"{r['distinct'][0]:>6} {r['distinct'][1]:>6} "
            f"{r['perplexity_median'][0]:>6} {r['perplexity_median'][1]:>6} "
            f"{r['violations'][0]:>4} {r['violations'][1]:>4}"
        )
    if args.out:
        report = {
            "a": {"file": str(args.a), "server": runs[0]["settings"]["server"]},
            "b": {"file": str(args.b), "server": runs[1]["settings"]["server"]},
            "rows": rows,
        }
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
