#!/usr/bin/env python
"""Single-stream greedy decoding speed on the CPU: plain HF `generate` in fp32 against the engine
under each CPU_QUANTIZATION, side by side in one process, plus how closely each follows fp32.

For every run (rounds interleave the configurations, so a busy machine slows all of them alike):

- `hf-generate fp32`: `model.generate` on the fp32 model, nothing else (the baseline);
- for each CPU_QUANTIZATION (none, int8, int4) the engine's own path, unconstrained and
  constrained (es/3000 by default, compiled by the project's constraint compiler):
  `HFEngine.generate` (blocking) and `HFEngine.submit` (the continuous-batching scheduler the
  server uses), each with one GenerationJob.

Every configuration of a round decodes the same long-form request in `--lang` (a new one each
round); constrained runs add the constraint's system hint, as the server does. Tokens/s are
completion tokens over wall time (prefill included), medians over `--runs`; ratios are against
the baseline's median. A run that ends before `--max-tokens` shows in the tokens column; as the
small model ends some stories early, a second figure leaves the prefill out: each run's prompt is
also passed once through the same model (timed apart), and decode tokens/s is
(tokens - 1) / (wall time - that prefill time) (for `submit` a slight overestimate: the scheduler
reuses the cached start of the chat template).

A fidelity section then decodes `--agree-tokens` greedy tokens of a few prompts with fp32 and each
quantization (plain `generate`) and reports where they part (with fp32's top-2 logit gap there: a
near tie or not), and, teacher-forced on fp32's own continuation, the top-1 agreement and mean
KL(fp32 || quantized) of the next-token distributions.

Caveat: every engine's scheduler thread keeps its own OpenMP team, and the engines leave the
other threads of the process one core each (`engine.scheduler.own_intra_op_threads`), so this
in-process comparison, with several engines alive and plain `generate` on the main thread, runs
every path slower than a server does; the committed decode.json predates that rule. For the
server's single stream against plain `generate`, read scripts/bench_serving.py's alternating pairs
(`single_stream_pairs`).

Prints a table and writes JSON (default bench_results/decode.json). Run from the repo root:

    TORCH_NUM_THREADS=2 nice .venv/bin/python scripts/bench_decode.py [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from wordcheck import violations  # noqa: E402

from wordlist_generation.constraints.spec import WordlistSpec  # noqa: E402
from wordlist_generation.constraints.wordlist import (  # noqa: E402
    WordlistRegistry,
    wordlist_compiler,
)
from wordlist_generation.engine.hf import HFEngine  # noqa: E402
from wordlist_generation.engine.loader import load_model  # noqa: E402
from wordlist_generation.engine.params import GenerationJob, SamplingParams  # noqa: E402

#: One long-form request per round (round 0 warms up): distinct prompts, so that no run decodes a
#: prompt the scheduler's prefix cache already holds whole (only the chat template's start).
TOPICS = {
    "es": [
        "un farero y una tormenta",
        "una niña que encuentra un mapa antiguo",
        "un pueblo de montaña en invierno",
        "dos hermanos que viajan en tren",
        "un perro perdido en la ciudad",
        "un mercado junto al mar",
        "una maestra y sus alumnos en el bosque",
        "un panadero que sueña con volar",
    ],
    "en": [
        "a lighthouse keeper and a storm",
        "a girl who finds an old map",
        "a mountain village in winter",
        "two brothers travelling by train",
        "a dog lost in the city",
        "a market by the sea",
        "a teacher and her pupils in the forest",
        "a baker who dreams of flying",
    ],
}
REQUEST = {
    "es": "Escribe una historia larga sobre {}. Usa muchos párrafos.",
    "en": "Write a long story about {}. Use many paragraphs.",
}
AGREE_PROMPTS = [
    "Tell me a short story about a dog and a child.",
    "Explain why it is important to sleep well.",
    "Describe the four seasons of the year.",
    "Cuéntame un cuento corto sobre un perro y un niño.",
    "Describe un día de lluvia en la ciudad.",
    "¿Qué haces un domingo por la mañana?",
]
BASELINE = "hf-generate fp32"


def encode(engine: HFEngine, text: str, hint: str | None = None) -> list[int]:
    messages = [{"role": "user", "content": text}]
    if hint:
        messages.insert(0, {"role": "system", "content": hint})
    return engine.encode_chat(messages)


def plain_generate(model: Any, prompt: list[int], max_tokens: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_tokens,
        do_sample=False,
    )
    return time.perf_counter() - t0, out[0, len(prompt) :].tolist()


def prefill_seconds(model: Any, prompt: list[int]) -> float:
    """One forward pass over the prompt (what every path does before its first token)."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(input_ids=torch.tensor([prompt]), logits_to_keep=1)
        return time.perf_counter() - t0


def engine_run(engine: HFEngine, job: GenerationJob, path: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    if path == "generate":
        [out] = engine.generate([job])
    else:

        async def served() -> list:
            return await engine.submit([job])

        [out] = asyncio.run(served())
    return time.perf_counter() - t0, out


def speed(args: argparse.Namespace, engines: dict[str, HFEngine], constraint: Any) -> dict:
    """Interleaved rounds over every configuration; returns per-configuration runs."""
    first = next(iter(engines.values()))
    hint = constraint.prompt_hint()
    topics = TOPICS[args.lang]
    params = SamplingParams(max_new_tokens=args.max_tokens)
    configs: list[tuple[str, Any]] = [(BASELINE, None)]
    for mode in engines:
        for kind in ("unconstrained", "constrained"):
            for path in args.paths.split(","):
                configs.append((f"{mode} {kind} {path}", (mode, kind, path)))
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for r in range(args.runs + 1):  # round 0 warms every path up and is not kept
        request = REQUEST[args.lang].format(topics[r % len(topics)])
        plain_prompt = encode(first, request)
        prompts = {"unconstrained": plain_prompt, "constrained": encode(first, request, hint)}
        for name, spec in configs:
            if spec is None:
                model = engines["none"].model
                prefill = prefill_seconds(model, plain_prompt)
                seconds, tokens = plain_generate(model, plain_prompt, args.max_tokens)
                row = {"seconds": seconds, "tokens": len(tokens)}
            else:
                mode, kind, path = spec
                job = GenerationJob(
                    prompt_ids=prompts[kind],
                    params=params,
                    constraint=constraint if kind == "constrained" else None,
                )
                prefill = prefill_seconds(engines[mode].model, prompts[kind])
                seconds, out = engine_run(engines[mode], job, path)
                text = out.choices[0].text
                row = {"seconds": seconds, "tokens": out.completion_tokens}
                if kind == "constrained":
                    row["compliant"] = constraint.check(text).ok
                    row["violations"] = violations(text, args.lang, args.n_words)
            row["tokens_per_second"] = row["tokens"] / row["seconds"]
            # The first token comes with the prefill; each later one costs a decoding step.
            row["prefill_seconds"] = prefill
            row["decode_tokens_per_second"] = (row["tokens"] - 1) / max(seconds - prefill, 1e-9)
            if r:
                runs[name].append(row)
        if r:
            print(f"  round {r}/{args.runs} done", flush=True)
    return runs


def first_difference(got: list[int], want: list[int]) -> int | None:
    """The first position where two token lists differ (one ending counts), or None."""
    for i in range(max(len(got), len(want))):
        if got[i : i + 1] != want[i : i + 1]:
            return i
    return None


def fidelity(args: argparse.Namespace, engines: dict[str, HFEngine]) -> dict:
    """Where greedy decoding of each quantization parts from fp32, and teacher-forced closeness."""
    reference = engines["none"]
    report: dict[str, Any] = {}
    continuations = []
    for text in AGREE_PROMPTS[: args.agree_prompts]:
        prompt = encode(reference, text)
        _, tokens = plain_generate(reference.model, prompt, args.agree_tokens)
        continuations.append((prompt, tokens))
    with torch.inference_mode():
        ref_logits = [
            reference.model(input_ids=torch.tensor([p + t])).logits[0, len(p) - 1 : -1].float()
            for p, t in continuations
        ]
        for mode, engine in engines.items():
            if mode == "none":
                continue
            parts, agree, kls = [], [], []
            for (prompt, want), ref in zip(continuations, ref_logits, strict=True):
                _, got = plain_generate(engine.model, prompt, args.agree_tokens)
                at = first_difference(got, want)
                gap = None
                if at is not None:
                    top2 = ref[at].topk(2).values
                    gap = round(float(top2[0] - top2[1]), 4)
                parts.append({"first_divergence": at, "fp32_top2_gap_there": gap})
                logits = engine.model(input_ids=torch.tensor([prompt + want])).logits
                logits = logits[0, len(prompt) - 1 : -1].float()
                agree += (logits.argmax(-1) == ref.argmax(-1)).tolist()
                p_ref = torch.log_softmax(ref, -1)
                kl = (p_ref.exp() * (p_ref - torch.log_softmax(logits, -1))).sum(-1)
                kls += kl.tolist()
            report[mode] = {
                "prompts": parts,
                "same_for_all_tokens": sum(p["first_divergence"] is None for p in parts),
                "teacher_forced_top1_agreement": round(sum(agree) / len(agree), 4),
                "teacher_forced_mean_kl": float(f"{statistics.mean(kls):.3g}"),
            }
    return report


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    base = median(runs[BASELINE], "tokens_per_second")
    base_decode = median(runs[BASELINE], "decode_tokens_per_second")
    table = {}
    for name, rows in runs.items():
        tps = median(rows, "tokens_per_second")
        decode = median(rows, "decode_tokens_per_second")
        entry = {
            "tokens_per_second_median": round(tps, 2),
            "ratio_to_hf_generate_fp32": round(tps / base, 2),
            "decode_tokens_per_second_median": round(decode, 2),
            "decode_ratio_to_hf_generate_fp32": round(decode / base_decode, 2),
            "completion_tokens_median": statistics.median(r["tokens"] for r in rows),
            "runs": rows,
        }
        if "compliant" in rows[0]:
            entry["all_compliant"] = all(r["compliant"] and not r["violations"] for r in rows)
        table[name] = entry
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_NUM_THREADS") or 2))
    ap.add_argument("--modes", default="none,int8,int4", help="CPU_QUANTIZATION values")
    ap.add_argument("--paths", default="generate,submit", help="engine paths: generate, submit")
    ap.add_argument("--lang", default="es", choices=sorted(TOPICS))
    ap.add_argument("--n-words", type=int, default=3000)
    ap.add_argument("--agree-prompts", type=int, default=6)
    ap.add_argument("--agree-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "decode.json")
    args = ap.parse_args()

    modes = args.modes.split(",")
    if "none" not in modes:
        modes.insert(0, "none")  # the fp32 model is the baseline and the fidelity reference
    engines = {
        mode: HFEngine(load_model(None, cpu_quantization=mode), torch_threads=args.threads)
        for mode in modes
    }
    # The engines left other threads one core; this thread's own paths (plain `generate`,
    # `HFEngine.generate`) get the same threads as the schedulers (see the caveat above).
    torch.set_num_threads(args.threads)
    try:
        first = engines["none"]
        compiler = wordlist_compiler(first.tokenizer, WordlistRegistry(REPO / "wordlists"))
        constraint = compiler.compile(WordlistSpec(args.lang, args.n_words)).constraint
        print(f"threads {args.threads}, {args.max_tokens} tokens, {args.runs} runs", flush=True)
        table = summarize(speed(args, engines, constraint))
        agreement = fidelity(args, engines)
    finally:
        for engine in engines.values():
            engine.close()

    print(
        f"\n{'configuration':34s} {'tok/s':>7s} {'ratio':>6s} {'decode':>7s} {'ratio':>6s} "
        f"{'tokens':>6s} {'compliant':>9s}"
    )
    for name, entry in table.items():
        ok = {True: "yes", False: "NO"}.get(entry.get("all_compliant"), "-")
        print(
            f"{name:34s} {entry['tokens_per_second_median']:7.2f} "
            f"{entry['ratio_to_hf_generate_fp32']:6.2f} "
            f"{entry['decode_tokens_per_second_median']:7.2f} "
            f"{entry['decode_ratio_to_hf_generate_fp32']:6.2f} "
            f"{entry['completion_tokens_median']:6} {ok:>9s}"
        )
    print("tok/s: wall time, prefill included; decode: after the first token (prefill timed apart)")
    print(f"\nfidelity to fp32 ({args.agree_prompts} prompts x {args.agree_tokens} greedy tokens)")
    print(
        f"{'mode':6s} {'same':>5s} {'top1':>7s} {'mean KL':>9s}  first divergence (fp32 top-2 gap)"
    )
    for mode, rep in agreement.items():
        where = ", ".join(
            "-"
            if p["first_divergence"] is None
            else f"{p['first_divergence']} ({p['fp32_top2_gap_there']})"
            for p in rep["prompts"]
        )
        print(
            f"{mode:6s} {rep['same_for_all_tokens']:>3d}/{len(rep['prompts'])} "
            f"{rep['teacher_forced_top1_agreement']:7.4f} {rep['teacher_forced_mean_kl']:9.2e}  {where}"
        )
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_at_end": os.getloadavg(),
        },
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "constraint": {"lang": args.lang, "n_words": args.n_words},
        "results": table,
        "fidelity": {"prompts": args.agree_prompts, "tokens": args.agree_tokens, **agreement},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
