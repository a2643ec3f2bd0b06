#!/usr/bin/env python
"""Decoding throughput of the project's own engine (`HFEngine`) on a CUDA machine, in-process.

The model is a random-weight Llama of Llama-3-8B size (hidden 4096, intermediate 14336, 32 layers,
32 heads, 8 KV heads, rope_theta 500000), bf16, created directly on the GPU, with the vocabulary,
special tokens and chat template of the real tokenizer (SmolLM2's, 49152 tokens). Speed and
masking work depend on the shapes and the tokenizer, not on the weights.

For each number of clients (default 1 and 16), answer length (default 64 tokens) and vocabulary
(unconstrained, es/3000: the 3,000 most frequent Spanish words), every client's job is submitted
at once (one `submit` per client, as separate requests arrive), each with its own prompt (chat
template applied), greedy; each round starts with an empty prefix cache. Constrained jobs are
built as the chat server builds them: the word list's prompt hint as the system message and
repetition_penalty 1.2 (CONSTRAINED_REPETITION_PENALTY). The table reports aggregate completion
tokens/s (sum of completion tokens / wall time), time to first text p50/p95 and the gap between
text chunks p50/p95, from each job's `on_delta` timestamps
(a chunk is a token, or a whole word in word-list mode, which streams only whole words). Every
constrained answer is re-checked with the constraint's own `check`; the JSON counts failures.
Short runs of the engine's other paths (sampling, penalties, logprobs, beams, scoring) then check
that each works on the device (`path_checks` in the JSON).

The output head's rows of the end-of-turn tokens are zeroed (their logit is always 0, which a
greedy random model never prefers), so that every row runs to `max_new_tokens` without touching the
engine; the finish reasons are reported. In the same run, single-stream greedy tokens/s of plain
transformers `generate` on the same model (batch 1, min_new_tokens = max_new_tokens, median of
`--hf-runs` after a warm-up) gives the reference for the engine's own single stream.

Run from the repo root on a CUDA machine (about 16 GB of GPU memory for the 8B shapes):

    PYTHONPATH=. python scripts/bench_gpu.py --tokenizer DIR [--clients 1,16] [--tokens 64]

DIR holds the tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja); by
default the embedded model's directory. A small CPU check of the script itself:

    .venv/bin/python scripts/bench_gpu.py --device cpu --layers 2 --hidden 64 --intermediate 128 \
        --heads 4 --kv-heads 2 --clients 1,4 --tokens 16 --hf-runs 1 --out /tmp/gpu-test.json

JSON goes to --out (default $OUT/gpu.json when OUT is set, else bench_results/gpu.json), rewritten
after every row so that an interrupted run still leaves its finished rows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import inspect
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from serving_common import TOPICS, pct  # noqa: E402
from serving_common import prompt_text as versioned_prompt  # noqa: E402

T_START = time.perf_counter()


def say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} +{time.perf_counter() - T_START:6.1f}s] {message}", flush=True)


def prompt_text(vocab: str, i: int) -> str:
    """Client i >= len(TOPICS) asks for another version: no two prompts of a round are equal."""
    k = i // len(TOPICS)
    return versioned_prompt(vocab, i, k + 1 if k else 0)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, fp32 on the CPU)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--tokens", default="64")
    ap.add_argument("--vocab", default="unconstrained,es3000")
    ap.add_argument("--max-rows", type=int, default=16)
    ap.add_argument("--hf-runs", type=int, default=3)
    ap.add_argument("--constrained-repetition-penalty", type=float, default=1.2)
    ap.add_argument("--keep-eos", action="store_true", help="leave the end tokens' logits alone")
    ap.add_argument("--seed", type=int, default=0)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "bench_results"
    ap.add_argument("--out", type=Path, default=out / "gpu.json")
    return ap.parse_args()


def load_tokenizer(directory: Path | None) -> tuple[Any, Path]:
    from transformers import AutoTokenizer

    if directory is None:
        from wordlist_generation.engine.loader import embedded_model_dir

        directory = embedded_model_dir()
    tok = AutoTokenizer.from_pretrained(str(directory))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # as `load_model` leaves it
    return tok, directory


def build_model(args: argparse.Namespace, tok: Any, end_ids: frozenset[int]) -> tuple[Any, dict]:
    """A random-weight Llama built directly on the device, in the benchmark's dtype."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    name = args.dtype
    if name == "auto":
        name = "float32" if args.device == "cpu" else "bfloat16"
    dtype = getattr(torch, name)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # no float32 copy of the weights on the way
    try:
        with torch.device(args.device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    torch.set_grad_enabled(False)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if not args.keep_eos:
        with torch.no_grad():
            for t in end_ids:
                model.lm_head.weight[t].zero_()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    names = (
        "num_hidden_layers hidden_size intermediate_size num_attention_heads num_key_value_heads"
    )
    names += " vocab_size max_position_embeddings initializer_range rope_parameters rope_theta"
    info: dict[str, Any] = {k: getattr(config, k, None) for k in names.split()}
    info.update(
        dtype=name,
        device=str(next(model.parameters()).device),
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        parameters=sum(p.numel() for p in model.parameters()),
        init_seconds=round(seconds, 2),
        end_token_ids=sorted(end_ids),
        end_token_logits_zeroed=not args.keep_eos,
    )
    return model, info


def build_constraint(tok: Any) -> tuple[Any, dict]:
    """es/3000 compiled and warmed as the server's PREBUILD does (default backend: llguidance)."""
    from wordlist_generation.constraints.spec import WordlistSpec
    from wordlist_generation.constraints.wordlist import WordlistRegistry, default_wordlist_dir
    from wordlist_generation.constraints.wordlist.compile import prebuild, wordlist_compiler

    t0 = time.perf_counter()
    registry = WordlistRegistry(default_wordlist_dir())
    compiler = wordlist_compiler(tok, registry, background_warm=False)
    prebuild(compiler, ["es"], [3000])
    constraint = compiler.compile(WordlistSpec("es", 3000, "word")).constraint
    return constraint, {
        "spec": "es/3000 (word)",
        "backend": "llguidance",
        "build_seconds": round(time.perf_counter() - t0, 2),
        "describe": constraint.describe(),
    }


async def run_round(engine: Any, jobs: list[Any]) -> tuple[list[Any], float, float]:
    """Every job submitted at once, each on its own (as separate requests arrive)."""
    t0 = time.perf_counter()
    # Bounded: a failing engine must not hold the device until the command's own limit.
    results = await asyncio.wait_for(
        asyncio.gather(*(engine.submit([job]) for job in jobs)), timeout=180
    )
    return [r[0] for r in results], t0, time.perf_counter() - t0


def stamp(into: list[float], choice: int, text: str) -> None:
    """`on_delta`: when each piece of text was released."""
    into.append(time.perf_counter())


def measure(
    engine: Any,
    prompts: list[list[int]],
    tokens: int,
    vocab: str,
    constraint: Any,
    repetition_penalty: float,
) -> dict:
    from wordlist_generation.engine.params import GenerationJob, SamplingParams
    from wordlist_generation.engine.prefill import PrefixCache

    # Each round starts with an empty prefix cache (set while the scheduler is idle): a round's
    # prompts still share their chat-template prefix, but none is read from an earlier round.
    old = engine.scheduler.prefixes
    engine.scheduler.prefixes = prefixes = PrefixCache(old.size, old.min_tokens)
    params = SamplingParams(max_new_tokens=tokens, repetition_penalty=repetition_penalty)
    stamps: list[list[float]] = [[] for _ in prompts]
    jobs = [
        GenerationJob(ids, params, constraint=constraint, on_delta=functools.partial(stamp, into))
        for ids, into in zip(prompts, stamps, strict=True)
    ]
    steps0, row_steps0 = engine.scheduler.steps, engine.scheduler.row_steps
    outputs, t0, wall = asyncio.run(run_round(engine, jobs))
    steps = engine.scheduler.steps - steps0
    row_steps = engine.scheduler.row_steps - row_steps0
    stamps = [[t - t0 for t in times] for times in stamps]
    ttfts = [times[0] for times in stamps if times]
    gaps = [b - a for times in stamps for a, b in zip(times, times[1:], strict=False)]
    total = sum(o.completion_tokens for o in outputs)
    texts = [o.choices[0].text for o in outputs]
    reasons = collections.Counter(o.choices[0].finish_reason for o in outputs)
    errors = [o.choices[0].error for o in outputs if o.choices[0].error]
    row: dict[str, Any] = {
        "clients": len(prompts),
        "max_tokens": tokens,
        "vocab": vocab,
        "repetition_penalty": repetition_penalty,
        "wall_seconds": round(wall, 3),
        "completion_tokens": total,
        "aggregate_tokens_per_second": round(total / wall, 2),
        "per_stream_tokens_per_second": round(total / wall / len(prompts), 2),
        "ttft_p50": round(pct(ttfts, 50) or 0, 4),
        "ttft_p95": round(pct(ttfts, 95) or 0, 4),
        "chunk_gap_p50": round(pct(gaps, 50) or 0, 5),
        "chunk_gap_p95": round(pct(gaps, 95) or 0, 5),
        "chunks": sum(len(times) for times in stamps),
        "decode_steps": steps,
        "mean_rows_per_step": round(row_steps / steps, 2) if steps else None,
        "prompt_tokens": [len(p) for p in prompts],
        "prefix_cache_hits": prefixes.hits,
        "prefix_cache_reused_tokens": prefixes.reused_tokens,
        "finish_reasons": dict(reasons),
        "errors": errors[:3],
        "empty_texts": sum(1 for t in texts if not t.strip()),
        "sample_text": texts[0][:160],
    }
    if constraint is not None:
        reports = [constraint.check(t) for t in texts]
        bad = [r for r in reports if not r.ok]
        row["non_compliant"] = len(bad)
        row["violations"] = [v for r in bad for v in r.violations][:5]
    return row


def path_checks(engine: Any, prompt: list[int], constraint: Any) -> dict:
    """Short runs of the engine's other paths on this device (sampling, penalties, logprobs,
    beams, scoring): each "ok" or what went wrong; constrained answers are re-checked."""
    from wordlist_generation.engine.params import GenerationJob, SamplingParams

    sample = {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "top_k": 50, "seed": 1}
    penalties = {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1}
    cases = [
        ("sampled", sample, None),
        ("penalties", {**penalties, "no_repeat_ngram_size": 2}, None),
        ("logprobs", {"logprobs": 2}, None),
        ("sampled_constrained_n2", {**sample, "n": 2}, constraint),
        ("beam2_constrained", {"num_beams": 2}, constraint),
    ]
    results: dict[str, str] = {}
    for name, extra, c in cases:
        if c is None and "constrained" in name:
            continue
        job = GenerationJob(prompt, SamplingParams(max_new_tokens=8, **extra), constraint=c)

        async def one(job: GenerationJob = job) -> Any:
            return (await asyncio.wait_for(engine.submit([job]), timeout=60))[0]

        try:
            choices = asyncio.run(one()).choices
            bad = [ch.error for ch in choices if ch.finish_reason == "error"]
            bad += [f"not in list: {ch.text!r}" for ch in choices if c and not c.check(ch.text).ok]
            results[name] = f"failed: {bad[:2]}" if bad else "ok"
        except Exception as exc:
            results[name] = f"error: {exc!r}"
    try:
        engine.score(prompt[:-4], prompt[-4:], top_k=2)
        results["score"] = "ok"
    except Exception as exc:
        results["score"] = f"error: {exc!r}"
    return results


def hf_generate_tps(model: Any, tok: Any, device: str, tokens: int, runs: int) -> dict:
    """Plain transformers `generate`, greedy, one stream, exactly `tokens` new tokens."""
    import torch
    from transformers import GenerationConfig

    enc = tok.apply_chat_template(
        [{"role": "user", "content": prompt_text("unconstrained", 0)}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    cuda = device.startswith("cuda")

    def config(n: int) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            num_beams=1,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )

    speeds = []
    with torch.inference_mode():
        model.generate(**inputs, generation_config=config(8))  # warm-up
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(**inputs, generation_config=config(tokens))
            if cuda:
                torch.cuda.synchronize()
            n = out.shape[1] - inputs["input_ids"].shape[1]
            speeds.append(n / (time.perf_counter() - t0))
    return {
        "max_tokens": tokens,
        "tokens_per_second": round(statistics.median(speeds), 2),
        "runs": [round(s, 2) for s in speeds],
    }


def environment(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        from importlib.metadata import version

        import llguidance  # noqa: F401

        env["llguidance"] = version("llguidance")
    except Exception as exc:  # reported, not fatal here: the constrained rows will say more
        env["llguidance"] = f"unavailable: {exc}"
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
    return env


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'tokens':>6} {'vocab':>13} {'clients':>7} {'tok/s':>9} {'x one':>6} {'ttft50':>8} "
        f"{'ttft95':>8} {'gap50':>8} {'gap95':>8} {'rows/st':>7} {'bad':>4}"
    )
    print(head, flush=True)
    for r in rows:
        if "error" in r:
            print(f"{r['max_tokens']:>6} {r['vocab']:>13} {r['clients']:>7} ERROR {r['error']}")
            continue
        print(
            f"{r['max_tokens']:>6} {r['vocab']:>13} {r['clients']:>7} "
            f"{r['aggregate_tokens_per_second']:>9.2f} {r.get('aggregate_vs_one_client') or 0:>6.2f} "
            f"{r['ttft_p50']:>8.4f} {r['ttft_p95']:>8.4f} {r['chunk_gap_p50']:>8.5f} "
            f"{r['chunk_gap_p95']:>8.5f} {r['mean_rows_per_step'] or 0:>7.2f} "
            f"{r.get('non_compliant', '-'):>4}",
            flush=True,
        )


def summarize(report: dict) -> None:
    """Ratios: each row against one client, single stream against plain `generate`,
    constrained against unconstrained."""
    rows = [r for r in report["rows"] if "error" not in r]

    index = {(r["clients"], r["max_tokens"], r["vocab"]): r for r in rows}

    def find(clients: int, tokens: int, vocab: str) -> dict | None:
        return index.get((clients, tokens, vocab))

    for r in rows:
        one = find(1, r["max_tokens"], r["vocab"])
        if one:
            r["aggregate_vs_one_client"] = round(
                r["aggregate_tokens_per_second"] / one["aggregate_tokens_per_second"], 2
            )
    report["single_stream_vs_hf_generate"] = []
    for hf in report["hf_generate"]:
        one = find(1, hf["max_tokens"], "unconstrained")
        if one and hf.get("tokens_per_second"):
            report["single_stream_vs_hf_generate"].append(
                {
                    "max_tokens": hf["max_tokens"],
                    "engine_tokens_per_second": one["aggregate_tokens_per_second"],
                    "hf_generate_tokens_per_second": hf["tokens_per_second"],
                    "ratio": round(one["aggregate_tokens_per_second"] / hf["tokens_per_second"], 2),
                }
            )
    report["constrained_vs_unconstrained"] = [
        {
            "clients": r["clients"],
            "max_tokens": r["max_tokens"],
            "ratio": round(r["aggregate_tokens_per_second"] / u["aggregate_tokens_per_second"], 2),
        }
        for r in rows
        if r["vocab"] != "unconstrained"
        and (u := find(r["clients"], r["max_tokens"], "unconstrained"))
    ]


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("wordlist_generation").setLevel(logging.INFO)
    import torch
    from transformers import LlamaForCausalLM

    from wordlist_generation.engine.hf import HFEngine
    from wordlist_generation.engine.loader import LoadedModel
    from wordlist_generation.engine.rows import end_token_ids

    clients = [int(c) for c in args.clients.split(",")]
    lengths = [int(t) for t in args.tokens.split(",")]
    vocabs = args.vocab.split(",")
    report: dict[str, Any] = {"environment": environment(args), "rows": [], "hf_generate": []}
    say(f"environment: {json.dumps(report['environment'])}")
    if "cache" not in inspect.signature(LlamaForCausalLM.forward).parameters:
        say("WARNING: this transformers' forward takes no `cache` argument; the engine needs it")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")

    tok, tok_dir = load_tokenizer(args.tokenizer)
    end_ids = end_token_ids(tok, tok.eos_token_id)
    say(f"tokenizer {tok_dir}: {len(tok)} tokens, end tokens {sorted(end_ids)}")
    constraint = None
    if "es3000" in vocabs:
        constraint, report["constraint"] = build_constraint(tok)
        say(f"constraint es/3000 compiled and warmed in {report['constraint']['build_seconds']} s")
    model, report["model"] = build_model(args, tok, end_ids)
    say(f"model: {json.dumps(report['model'])}")
    if args.device.startswith("cuda"):
        report["model"]["gpu_memory_after_init_gib"] = round(
            torch.cuda.memory_allocated() / 2**30, 2
        )
    loaded = LoadedModel(
        model=model, tokenizer=tok, model_id="random-llama", source="random", load_seconds=0.0
    )
    engine = HFEngine(loaded, max_rows=args.max_rows)
    report["engine"] = {**engine.describe(), "max_rows": args.max_rows, "prefill_chunk": 128}
    say(f"engine on {engine.device}; end tokens {sorted(engine.eos_token_ids)}")
    if not args.keep_eos:
        say("end-token logits are zeroed in the output head: rows run to max_tokens")

    def prompts_for(vocab: str, n: int) -> list[list[int]]:
        out = []
        for i in range(n):
            messages = [{"role": "user", "content": prompt_text(vocab, i)}]
            if vocab != "unconstrained":
                messages.insert(0, {"role": "system", "content": constraint.prompt_hint()})
            out.append(engine.encode_chat(messages))
        return out

    def settings(vocab: str) -> tuple[Any, float]:
        if vocab == "unconstrained":
            return None, 1.0
        return constraint, args.constrained_repetition_penalty

    for vocab in vocabs:  # warm-up: first kernels, the largest batch's shapes, lazy masks
        c, pen = settings(vocab)
        for n in sorted({1, max(clients)}):
            measure(engine, prompts_for(vocab, n), 8, vocab, c, pen)
        say(f"warm-up {vocab} done")

    for tokens in lengths:
        for vocab in vocabs:
            c, pen = settings(vocab)
            for n in clients:
                try:
                    row = measure(engine, prompts_for(vocab, n), tokens, vocab, c, pen)
                except Exception as exc:  # keep the other rows and the reference
                    row = {"clients": n, "max_tokens": tokens, "vocab": vocab, "error": repr(exc)}
                report["rows"].append(row)
                say(json.dumps(row, ensure_ascii=False))
                write(report, args.out)
    for tokens in lengths:  # the engine is idle meanwhile: its thread waits for work
        try:
            hf = hf_generate_tps(model, tok, args.device, tokens, args.hf_runs)
        except Exception as exc:
            hf = {"max_tokens": tokens, "error": repr(exc)}
        report["hf_generate"].append(hf)
        say(f"plain transformers generate, greedy, one stream: {json.dumps(hf)}")
        write(report, args.out)
    summarize(report)
    print()
    print_table(report["rows"])
    print()
    print("single stream vs plain generate:", report["single_stream_vs_hf_generate"])
    print("constrained / unconstrained:", report["constrained_vs_unconstrained"], flush=True)
    write(report, args.out)

    report["path_checks"] = path_checks(engine, prompts_for(vocabs[0], 1)[0], constraint)
    say(f"other engine paths on {engine.device}: {json.dumps(report['path_checks'])}")
    engine.close()
    if args.device.startswith("cuda"):
        report["gpu_memory_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["total_seconds"] = round(time.perf_counter() - T_START, 1)
    write(report, args.out)
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
