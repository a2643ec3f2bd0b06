#!/usr/bin/env python
"""Phonological mode without a model: lexicon build/load, solve+compile, preview latency, masks.

Prints a table and writes JSON (default bench_results/phonology.json). Run from the repo root:

    .venv/bin/python scripts/bench_phonology.py [--preview-runs 20] [--compile-runs 5]

The cold build uses a fresh temporary cache directory, so it measures what the first start on a
machine pays; the load is the same directory read back (what every later start pays). The two
request combinations are the ones from the issue: no /ɹ/ and no /l/ plus two /s/-initial words;
and a d/z word-final minimal pair with at most two syllables.
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
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wordlist_generation.constraints.phonology import (  # noqa: E402
    Lexicon,
    PhonologicalConstraint,
    parse_constraints,
    preview,
    solve,
)

COMBINATIONS: dict[str, dict[str, Any]] = {
    "no_r_no_l_two_s_initial": {
        "constraints": [
            {"type": "exclude", "phonemes": ["ɹ", "l"]},
            {"type": "include", "phonemes": ["s"], "position": "initial", "min_count": 2},
        ],
        "sample": "So I see the sun in the sky.",
    },
    "dz_final_pair_max_2_syllables": {
        "constraints": [
            {"type": "contrastive_minpair", "phoneme1": "d", "phoneme2": "z", "position": "final"},
            {"type": "bound", "norm": "syllables", "max_value": 2},
        ],
        "sample": "The cat has had a nap in the sun.",
    },
}


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def mask_times(pc: PhonologicalConstraint, tokenizer: Any, text: str) -> list[float]:
    """Seconds per `fill_allowed` while replaying `text` (what each decoding step pays)."""
    state = pc.start()
    out = []
    for tok in tokenizer.encode(text, add_special_tokens=False):
        allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
        t0 = time.perf_counter()
        state.fill_allowed(allowed)
        out.append(time.perf_counter() - t0)
        if not allowed[tok] or not state.advance(tok):
            raise RuntimeError(f"sample {text!r} rejected by its own grammar")
    if not state.can_end():
        raise RuntimeError(f"sample {text!r} does not satisfy its grammar")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preview-runs", type=int, default=20)
    ap.add_argument("--compile-runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "phonology.json")
    ap.add_argument(
        "--generate-runs",
        type=int,
        default=3,
        help="greedy 128-token answers per combination on the embedded model (0 = skip)",
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lexicon-bench-") as tmp:
        cold, cold_total = timed(lambda: Lexicon.load(Path(tmp)))
        warm, _ = timed(lambda: Lexicon.load(Path(tmp)))
    _, index_s = timed(warm.warm)
    lexicon = warm
    lex_result = {
        "n_words": lexicon.size,
        "min_zipf": lexicon.min_zipf,
        "build_s": round(cold.build_seconds or 0.0, 3),
        "build_and_write_s": round(cold_total, 3),
        "load_s": round(warm.load_seconds, 3),
        "index_s": round(index_s, 3),
    }

    from transformers import AutoTokenizer

    from wordlist_generation.constraints.tokenizer import TokenizerTables
    from wordlist_generation.engine.loader import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    tables, tables_s = timed(lambda: TokenizerTables(tokenizer))

    combos: dict[str, Any] = {}
    for name, spec in COMBINATIONS.items():
        constraints = parse_constraints(spec["constraints"])
        solve_times, compile_times = [], []
        pc: PhonologicalConstraint | None = None
        for _ in range(args.compile_runs):
            sol, t_solve = timed(lambda c=constraints: solve(lexicon, c))
            pc, t_compile = timed(lambda s=sol: PhonologicalConstraint(s, lexicon, tables))
            solve_times.append(t_solve)
            compile_times.append(t_compile)
        assert pc is not None
        preview_times = []
        for _ in range(args.preview_runs):
            _, t = timed(lambda c=constraints: preview(lexicon, c))
            preview_times.append(t)
        masks = mask_times(pc, tokenizer, spec["sample"])
        d = pc.describe()
        combos[name] = {
            "constraints": spec["constraints"],
            "allowed": d["vocabulary"]["allowed"],
            "survival": d["vocabulary"]["survival"],
            "warning": d["vocabulary"]["warning"],
            "domains": [
                {"type": r["type"], "domain_sizes": r["domain_sizes"], "chosen": r["chosen"]}
                for r in d["required"]
            ],
            "grammar_chars": d["grammar"]["chars"],
            "grammar_words": d["grammar"]["n_words"],
            "min_tokens_to_satisfy": d["grammar"]["min_tokens_to_satisfy"],
            "solve_ms_median": ms(statistics.median(solve_times)),
            "compile_ms_median": ms(statistics.median(compile_times)),
            "solve_plus_compile_ms_median": ms(
                statistics.median(s + c for s, c in zip(solve_times, compile_times, strict=True))
            ),
            "preview_ms_median": ms(statistics.median(preview_times)),
            "preview_ms_max": ms(max(preview_times)),
            "mask_ms_first": ms(masks[0]),
            "mask_ms_median": ms(statistics.median(masks)),
            "mask_ms_max": ms(max(masks)),
            "sample": spec["sample"],
        }

    generation = (
        tokens_per_second(lexicon, tables, args.generate_runs, args.threads)
        if args.generate_runs
        else None
    )
    result = {
        "generation": generation,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "lexicon": lex_result,
        "tokenizer_tables_s": round(tables_s, 3),
        "runs": {"preview": args.preview_runs, "compile": args.compile_runs},
        "combinations": combos,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    print(f"lexicon: {lex_result['n_words']} words (Zipf >= {lex_result['min_zipf']})")
    print(
        f"  cold build {lex_result['build_s']:.2f} s (+ parquet write: {lex_result['build_and_write_s']:.2f} s), "
        f"load {lex_result['load_s'] * 1000:.0f} ms, indexes {lex_result['index_s'] * 1000:.0f} ms; "
        f"tokenizer tables {tables_s * 1000:.0f} ms"
    )
    header = f"{'combination':34} {'allowed':>8} {'surv':>6} {'solve':>8} {'compile':>8} {'preview':>8} {'mask':>7} {'min_tok':>7}"
    print(header)
    print("-" * len(header))
    for name, r in combos.items():
        print(
            f"{name:34} {r['allowed']:>8} {r['survival']:>6.3f} {r['solve_ms_median']:>6.1f}ms "
            f"{r['compile_ms_median']:>6.1f}ms {r['preview_ms_median']:>6.1f}ms {r['mask_ms_median']:>5.2f}ms "
            f"{r['min_tokens_to_satisfy']:>7}"
        )
    print(
        f"(medians: preview of {args.preview_runs} runs, solve/compile of {args.compile_runs}; mask = per decoding step)"
    )
    if generation:
        print(
            f"greedy tokens/s on the embedded model ({args.generate_runs} runs, interleaved, medians):"
        )
        for name, g in generation["combinations"].items():
            print(
                f"  {name:34} constrained {g['constrained_tps']:6.2f}  unconstrained "
                f"{g['unconstrained_tps']:6.2f}  ratio {g['ratio']:.3f}  compliant {g['compliant']}"
            )
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


def tokens_per_second(lexicon: Any, tables: Any, runs: int, threads: int) -> dict[str, Any]:
    """Constrained vs unconstrained greedy tokens/s, side by side (interleaved) in one process."""
    from wordlist_generation.engine.hf import HFEngine as Engine
    from wordlist_generation.engine.loader import load_model
    from wordlist_generation.engine.params import GenerationJob, SamplingParams

    engine = Engine(load_model(None), torch_threads=threads)
    prompt = engine.encode_chat(
        [{"role": "user", "content": "Write a long story about a child and a dog at the sea."}]
    )
    params = SamplingParams(max_new_tokens=128)
    out: dict[str, Any] = {"max_new_tokens": 128, "threads": threads, "combinations": {}}
    engine.generate([GenerationJob(prompt, SamplingParams(max_new_tokens=4))])  # warm-up
    for name, spec in COMBINATIONS.items():
        pc = PhonologicalConstraint(
            solve(lexicon, parse_constraints(spec["constraints"])), lexicon, tables
        )
        free, bound, compliant = [], [], []
        for _ in range(runs):
            for constraint, sink in ((None, free), (pc, bound)):
                t0 = time.perf_counter()
                result = engine.generate([GenerationJob(prompt, params, constraint)])[0]
                sink.append(result.completion_tokens / (time.perf_counter() - t0))
                if constraint is not None:
                    compliant.append(pc.check(result.choices[0].text).ok)
        c, u = statistics.median(bound), statistics.median(free)
        out["combinations"][name] = {
            "constrained_tps": round(c, 2),
            "unconstrained_tps": round(u, 2),
            "ratio": round(c / u, 3),
            "compliant": all(compliant),
        }
    return out


if __name__ == "__main__":
    main()
