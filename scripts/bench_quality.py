#!/usr/bin/env python
"""Does the vocabulary constraint wreck the text? Quality of constrained vs unconstrained answers.

For a fixed set of prompts per language (es, en) and N in (1000, 3000), runs the embedded model in
process (batched, the same engine the server uses) under several configurations and reports:

- usable: share of answers that are non-empty with at least 8 words;
- repeats: share of answers with a loop (a 2-4-word sequence twice in a row) or a 3-4-word sequence
  occurring twice anywhere;
- distinct: distinct-word ratio (distinct words / words), averaged over answers;
- violations: words outside the list found by an independent checker (must be 0 when constrained).

Every sample is kept in the JSON (default bench_results/quality.json) so a reader can judge.

    .venv/bin/python scripts/bench_quality.py [--configs baseline,hint,...] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from wordcheck import violations, words  # noqa: E402

from wordlist_generation.constraints.wordlist.lists import WordlistRegistry  # noqa: E402
from wordlist_generation.engine.hf import HFEngine as Engine  # noqa: E402
from wordlist_generation.engine.loader import load_model  # noqa: E402
from wordlist_generation.engine.params import GenerationJob, SamplingParams  # noqa: E402

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


def has_repeat(ws: list[str]) -> bool:
    lw = [w.lower() for w in ws]
    for n in (2, 3, 4):
        grams = [tuple(lw[i : i + n]) for i in range(len(lw) - n + 1)]
        if any(grams[i] == grams[i + n] for i in range(len(grams) - n)):
            return True
        if n >= 3 and len(set(grams)) < len(grams):
            return True
    return False


def metrics(texts: list[str]) -> dict[str, float]:
    ws = [words(t) for t in texts]
    return {
        "usable": sum(len(w) >= 8 for w in ws) / len(ws),
        "repeats": sum(has_repeat(w) for w in ws) / len(ws),
        "distinct": statistics.mean(len({x.lower() for x in w}) / len(w) if w else 0.0 for w in ws),
        "mean_words": statistics.mean(len(w) for w in ws),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    ap.add_argument("--langs", default="es,en")
    ap.add_argument("--sizes", default="1000,3000")
    ap.add_argument(
        "--full-sizes",
        default="1000",
        help="sizes at which every config runs; at the other sizes only --main-configs run",
    )
    ap.add_argument("--main-configs", default="unconstrained-greedy,greedy-nohint,greedy-hint,greedy-hint-reppen")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="llguidance")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "quality.json")
    args = ap.parse_args()

    from wordlist_generation.constraints.compiler import ConstraintCompiler
    from wordlist_generation.constraints.spec import WordlistSpec
    from wordlist_generation.constraints.tokenizer import TokenizerTables
    from wordlist_generation.constraints.wordlist.compile import wordlist_compiler
    from wordlist_generation.constraints.wordlist.grammar import GrammarOptions

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


if __name__ == "__main__":
    main()
