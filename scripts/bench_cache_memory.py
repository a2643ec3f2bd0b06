"""Private memory of a full constraint cache against its byte bound (CONSTRAINT_CACHE_MB).

Compiles word lists of growing sizes through the server's own compiler (single-flight LRU,
background warm-up), uses each one as decoding would (random texts of its words, token by token,
masks included), and reads the process's private resident memory (RssAnon, /proc/self/status)
after each: the growth over the baseline taken before the first compilation must stay within the
budget plus 10 %, however many lists went through the cache. Prints a table, writes JSON.

    .venv/bin/python scripts/bench_cache_memory.py                 # 512 MiB, es/en/de/fr 1k-50k
    .venv/bin/python scripts/bench_cache_memory.py --budget-mb 96 --sizes 2000,4000 --langs es,en
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 1 << 20


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def use(constraint, tokenizer, tables, texts: int, rng: random.Random) -> None:
    """Decode `texts` random texts of the constraint's words through fresh sequence states."""
    from wordlist_generation.constraints.bitmask import zeros

    words = constraint.compiled_words.full_words
    row = zeros(tables.width)
    for _ in range(texts):
        seq = constraint.start()
        text = " ".join(rng.choice(words) for _ in range(40))
        for token in tokenizer.encode(text, add_special_tokens=False):
            row.zero_()
            seq.fill_bitmask(row)
            if not seq.advance(token):
                break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-mb", type=int, default=512, help="CONSTRAINT_CACHE_MB")
    parser.add_argument("--entries", type=int, default=32, help="CONSTRAINT_CACHE_SIZE")
    parser.add_argument("--langs", default="es,en,de,fr")
    parser.add_argument("--sizes", default="1000,5000,20000,50000")
    parser.add_argument("--texts", type=int, default=40, help="random texts decoded per list")
    parser.add_argument("--json", type=Path, default=REPO / "bench_results" / "cache_memory.json")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from wordlist_generation.constraints.compiler import ConstraintCompiler
    from wordlist_generation.constraints.spec import WordlistSpec
    from wordlist_generation.constraints.tokenizer import TokenizerTables
    from wordlist_generation.constraints.wordlist import WordlistHandler, WordlistRegistry
    from wordlist_generation.engine.loader import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    tables = TokenizerTables(tokenizer)
    registry = WordlistRegistry(REPO / "wordlists")
    handler = WordlistHandler(tables, registry, background_warm=False)
    handler.warmup()
    compiler = ConstraintCompiler(args.entries, max_bytes=args.budget_mb * MIB)
    compiler.register(WordlistSpec, handler)
    langs = args.langs.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    for lang in langs:
        registry.get(lang)
    rng = random.Random(0)
    gc.collect()
    base = rss_anon()
    rows = []
    print(f"budget {args.budget_mb} MiB, at most {args.entries} entries; baseline {base / MIB:.0f} MiB")
    print(f"{'list':>10} {'weight MiB':>10} {'cached MiB':>10} {'entries':>7} {'growth MiB':>10}")
    for n in sizes:
        for lang in langs:
            t0 = time.perf_counter()
            constraint = compiler.compile(WordlistSpec(lang, n)).constraint
            constraint.warm(handler.warm_words, handler.warm_budget_s)  # what the server does
            use(constraint, tokenizer, tables, args.texts, rng)
            del constraint
            gc.collect()
            growth = rss_anon() - base
            weight = compiler.last_weight
            rows.append(
                {
                    "list": f"{lang}/{n}",
                    "weight_mib": round(weight / MIB, 1),
                    "cached_mib": round(compiler.cached_bytes / MIB, 1),
                    "entries": len(compiler),
                    "growth_mib": round(growth / MIB, 1),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            r = rows[-1]
            print(
                f"{r['list']:>10} {r['weight_mib']:>10} {r['cached_mib']:>10} {r['entries']:>7} "
                f"{r['growth_mib']:>10}",
                flush=True,
            )
    peak = max(r["growth_mib"] for r in rows)
    final = rows[-1]["growth_mib"]
    limit = args.budget_mb * 1.1
    ok = peak <= limit
    print(f"growth: peak {peak} MiB, final {final} MiB; limit {limit:.0f} MiB: {'ok' if ok else 'OVER'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"budget_mib": args.budget_mb, "entries": args.entries, "baseline_mib": round(base / MIB),
             "peak_growth_mib": peak, "final_growth_mib": final, "ok": ok, "rows": rows},
            indent=2,
        )
        + "\n"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
