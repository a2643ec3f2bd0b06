"""Benchmark of the word-list constraint backends, side by side.

For each backend (llguidance, lm-format-enforcer) and list size N (es: 1,000 / 3,000 / 10,000 /
50,000 words by default) it measures, in a fresh worker process with a hard time limit:

- the compile time of a fresh constraint (cache miss; per-tokenizer tables built beforehand, as
  `ConstraintCompiler.warmup` does at start-up);
- the per-token mask time (state update + mask of one row, median and p99) over realistic
  generations: the embedded model answering a few prompts greedily under the constraint;
- end-to-end tokens/s of those generations against the same generations unconstrained.

Every generation is exactly `--tokens` tokens (EOS is suppressed until then), so tokens/s compare
like with like. A backend that does not finish a size within `--time-limit` seconds is recorded
as skipped with that limit. Prints a table and writes JSON (default bench_results/constraints.json).

    .venv/bin/python scripts/bench_constraints.py [--sizes 1000,3000] [--backends llguidance]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("llguidance", "lm-format-enforcer")
PROMPTS = (
    "¿Qué haces normalmente los fines de semana?",
    "Describe tu ciudad favorita y explica por qué te gusta.",
    "Cuéntame una historia corta sobre un perro y un niño.",
)


def default_model_dir() -> str:
    """The cached converted embedded model when the project's loader is available."""
    try:
        from wordlist_generation.engine.loader import embedded_model_dir

        return str(embedded_model_dir())
    except Exception:  # the loader is optional for this script
        return "/tmp/smol"


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 4),
        "p99_ms": round(p99 * 1e3, 4),
        "max_ms": round(ordered[-1] * 1e3, 4),
    }


# ------------------------------------------------------------------------------ worker


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement (backend or "none", size), in its own process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from wordlist_generation.constraints.processor import ConstraintLogitsProcessor
    from wordlist_generation.constraints.spec import WordlistSpec
    from wordlist_generation.constraints.tokenizer import TokenizerTables
    from wordlist_generation.constraints.wordlist.compile import WordlistHandler, wordlist_compiler
    from wordlist_generation.constraints.wordlist.constraint import prompt_hint
    from wordlist_generation.constraints.wordlist.lists import (
        WordlistRegistry,
        default_wordlist_dir,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"backend": args.worker, "n_words": args.n}
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    out["model_load_s"] = round(time.perf_counter() - t0, 3)
    eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")})

    constraint = None
    if args.worker != "none":
        registry = WordlistRegistry(default_wordlist_dir())
        registry.get(args.lang).sha256_top(args.n)  # the list is loaded once per process
        t0 = time.perf_counter()
        tables = TokenizerTables(tok)
        compiler = wordlist_compiler(
            tok, registry, backend=args.worker, tables=tables, background_warm=False
        )
        handler = compiler.handler(WordlistSpec)
        assert isinstance(handler, WordlistHandler)
        handler.warmup()
        out["warmup_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        compiled = compiler.compile(WordlistSpec(args.lang, args.n))
        constraint = compiled.constraint
        assert not compiled.cache_hit
        out["compile_s"] = round(time.perf_counter() - t0, 4)
        out["compile_seconds_reported"] = round(constraint.compile_seconds, 4)

    def prompt_ids(question: str) -> torch.Tensor:
        messages = [{"role": "user", "content": question}]
        if constraint is not None or args.hint_unconstrained:
            messages.insert(0, {"role": "system", "content": prompt_hint(args.lang)})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return torch.tensor([tok.encode(text, add_special_tokens=False)])

    runs = []
    all_rows: list[float] = []
    fresh_rows: list[float] = []
    warm_rows: list[float] = []
    calls: list[float] = []
    for k, question in enumerate(PROMPTS[: args.prompts]):
        if k == 1 and constraint is not None:
            # What the server does in the background after compiling (or at start-up for the
            # prebuilt lists): the first generation above ran on a fresh constraint.
            out["warm_s"] = round(constraint.warm(handler.warm_words, handler.warm_budget_s), 3)
        ids = prompt_ids(question)
        processors = LogitsProcessorList()
        proc = None
        if constraint is not None:
            proc = ConstraintLogitsProcessor(
                [constraint.start()],
                prompt_len=ids.shape[1],
                num_beams=1,
                eos_token_ids=eos,
                record_timings=True,
            )
            processors.append(proc)
        t0 = time.perf_counter()
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                logits_processor=processors,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tok.eos_token_id,
            )
        seconds = time.perf_counter() - t0
        new = gen[0, ids.shape[1] :].tolist()
        text = tok.decode([t for t in new if t not in eos])
        run: dict[str, Any] = {
            "tokens": len(new),
            "seconds": round(seconds, 3),
            "tokens_per_s": round(len(new) / seconds, 3),
            "text": text,
        }
        if proc is not None and constraint is not None:
            assert proc.timings is not None and proc.call_timings is not None
            final = constraint.finalize(text, complete=False)
            run["errors"] = {str(r): m for r, m in proc.errors.items()}
            run["check_ok"] = constraint.check(final).ok
            run["row"] = _quantiles(proc.timings)
            all_rows += proc.timings
            calls += proc.call_timings
            (warm_rows if k else fresh_rows).extend(proc.timings)
        runs.append(run)
    out["runs"] = runs
    out["tokens_per_s"] = round(sum(r["tokens"] for r in runs) / sum(r["seconds"] for r in runs), 3)
    later = runs[1:] or runs
    out["tokens_per_s_after_first"] = round(
        sum(r["tokens"] for r in later) / sum(r["seconds"] for r in later), 3
    )
    if constraint is not None:
        out["mask_row"] = _quantiles(all_rows)
        out["mask_row_fresh"] = _quantiles(fresh_rows)
        out["mask_row_warm"] = _quantiles(warm_rows)
        out["processor_call"] = _quantiles(calls)
        out["describe"] = constraint.describe()
    return out


# ------------------------------------------------------------------------------ driver


def run_worker(args: argparse.Namespace, backend: str, n: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        backend,
        "--n",
        str(n),
        "--model",
        args.model,
        "--lang",
        args.lang,
        "--tokens",
        str(args.tokens),
        "--prompts",
        str(args.prompts),
        "--threads",
        str(args.threads),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.time_limit, cwd=REPO, check=False
        )
    except subprocess.TimeoutExpired:
        return {
            "backend": backend,
            "n_words": n,
            "skipped": True,
            "reason": f"did not finish within the time limit of {args.time_limit:.0f} s",
            "time_limit_s": args.time_limit,
        }
    if proc.returncode != 0:
        return {
            "backend": backend,
            "n_words": n,
            "skipped": True,
            "reason": f"worker failed: {proc.stderr.strip().splitlines()[-1:]}",
        }
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    return result


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Mask times are per row and step (state update + mask); `fresh` is the first generation
    right after compiling, `warm` the later ones, after `warm()`; tokens/s and the ratio to the
    unconstrained model are over the later generations."""
    base_tps = baseline.get("tokens_per_s_after_first")
    head = (
        f"{'backend':<20}{'N':>7}{'compile s':>10}{'warm s':>8}{'fresh med/p99 ms':>19}"
        f"{'warm med/p99 ms':>18}{'tok/s':>8}{'ratio':>7}  note"
    )
    lines = [head, "-" * len(head)]
    lines.append(f"{'unconstrained':<20}{'':>7}{'':>10}{'':>8}{'':>19}{'':>18}"
                 f"{_fmt(base_tps, 2):>8}{'1.00':>7}")  # fmt: skip
    for r in results:
        if r.get("skipped"):
            lines.append(f"{r['backend']:<20}{r['n_words']:>7}  skipped: {r['reason']}")
            continue
        tps = r["tokens_per_s_after_first"]
        ratio = tps / base_tps if base_tps else None
        errors = sum(len(run.get("errors", {})) for run in r["runs"])
        ok = all(run.get("check_ok", True) for run in r["runs"])
        note = ("checks ok" if ok else "CHECK FAILED") + (f", {errors} errors" if errors else "")
        fresh, warm = r["mask_row_fresh"], r["mask_row_warm"]
        lines.append(
            f"{r['backend']:<20}{r['n_words']:>7}{_fmt(r['compile_s']):>10}"
            f"{_fmt(r.get('warm_s'), 2):>8}"
            f"{_fmt(fresh['median_ms'], 2) + ' / ' + _fmt(fresh['p99_ms'], 2):>19}"
            f"{_fmt(warm['median_ms'], 2) + ' / ' + _fmt(warm['p99_ms'], 2):>18}"
            f"{_fmt(tps, 2):>8}{_fmt(ratio, 2):>7}  {note}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: embedded model)")
    ap.add_argument("--lang", default="es")
    ap.add_argument("--sizes", default="1000,3000,10000,50000")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--tokens", type=int, default=128, help="tokens per generation (greedy)")
    ap.add_argument("--prompts", type=int, default=3, help="generations per measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per measurement")
    ap.add_argument("--hint-unconstrained", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "bench_results" / "constraints.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.model = args.model or default_model_dir()

    if args.worker:
        print(json.dumps(worker(args), ensure_ascii=False))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    print(f"model {args.model}, lang {args.lang}, {args.tokens} tokens x {args.prompts} prompts")
    baseline = run_worker(args, "none", 0)
    print(f"unconstrained: {_fmt(baseline.get('tokens_per_s'), 2)} tokens/s", flush=True)
    results = []
    for n in sizes:
        for backend in backends:
            r = run_worker(args, backend, n)
            results.append(r)
            done = "skipped" if r.get("skipped") else f"{r['tokens_per_s']:.2f} tok/s"
            print(f"{backend} N={n}: {done}", flush=True)
    print()
    print(table(results, baseline))
    print(table.__doc__)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "model": args.model,
            "lang": args.lang,
            "tokens": args.tokens,
            "prompts": list(PROMPTS[: args.prompts]),
            "time_limit_s": args.time_limit,
            "threads": args.threads,
        },
        "unconstrained": baseline,
        "results": results,
        "aims": {
            "compile_50000_s": 0.5,
            "mask_p99_ms_at_50000": 1.0,
            "tokens_per_s_ratio": 0.9,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
