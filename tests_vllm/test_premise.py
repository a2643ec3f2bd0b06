"""The premise of a vLLM engine, against a real vLLM server: it serves the embedded model here,
its llguidance accepts exactly the strings ours accepts for the grammars this gateway compiles,
and answers it decodes under those grammars pass the gateway's independent checks.

What a forwarded grammar cannot carry is shown too: required words (phonological `include`) are
per-step steering on this server, so the grammar alone does not place them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from vllm_env import SERVED, VLLM_PYTHON
from wordcheck import violations

from wordlist_generation.constraints.compiler import ConstraintCompiler
from wordlist_generation.constraints.phonology import PhonologyHandler
from wordlist_generation.constraints.spec import PhonologicalSpec, WordlistSpec
from wordlist_generation.constraints.tokenizer import TokenizerTables
from wordlist_generation.constraints.wordlist import WordlistHandler, WordlistRegistry
from wordlist_generation.engine.loader import default_cache_dir, embedded_model_dir
from wordlist_generation.protocol import constraint_spec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORDLISTS = [("es", 1000, "word"), ("es", 1000, "lemma"), ("en", 3000, "word")]
SAMPLES = [
    "Hola mundo.", "El perro y los perros", "El perro come pan.", "the dog", "Hola  mundo",
    "Hola 123", "¿Qué es esto?", "I like it.", "The cat sat on the mat.", "A big dog.",
    "Sam sees the sun.", "Run, rabbit, run!", "He is happy.", "l'homme",
]  # fmt: skip
NO_R = [{"type": "exclude", "phonemes": ["r"]}]
THREE_S = [{"type": "include", "phonemes": ["s"], "position": "initial", "min_count": 3}]


@pytest.fixture(scope="module")
def compiler():
    from transformers import AutoTokenizer

    tables = TokenizerTables(AutoTokenizer.from_pretrained(embedded_model_dir()))
    compiler = ConstraintCompiler(8)
    registry = WordlistRegistry(REPO / "wordlists")
    compiler.register(WordlistSpec, WordlistHandler(tables, registry, background_warm=False))
    phonology = PhonologyHandler(tables, cache_dir=default_cache_dir() / "lexicon")
    compiler.register(PhonologicalSpec, phonology)
    return compiler


def constraint(compiler, spec):
    return compiler.compile(spec).constraint


def verdicts(python: Path | str, grammars: dict) -> dict:
    request = {"model": str(embedded_model_dir()), "grammars": grammars}
    run = subprocess.run(
        [str(python), str(HERE / "accept_strings.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_vllms_llguidance_accepts_exactly_what_ours_accepts(compiler) -> None:
    grammars = {
        f"{lang}/{n}/{unit}": {
            "grammar": constraint(compiler, WordlistSpec(lang, n, unit)).exported_grammar().text,
            "samples": SAMPLES,
        }
        for lang, n, unit in WORDLISTS
    }
    phon = constraint(compiler, constraint_spec("en", None, NO_R))
    grammars["en/no-r"] = {"grammar": phon.exported_grammar().text, "samples": SAMPLES}
    ours = verdicts(sys.executable, grammars)
    theirs = verdicts(VLLM_PYTHON, grammars)
    assert theirs == ours
    for lang, n, unit in WORDLISTS:  # and both agree with the gateway's own backend
        c = constraint(compiler, WordlistSpec(lang, n, unit))
        assert ours[f"{lang}/{n}/{unit}"] == {s: c.accepts(s) for s in SAMPLES}
    assert any(ours["es/1000/lemma"].values()) and not all(ours["es/1000/lemma"].values())


def ask(base: str, grammar: str, prompt: str, max_tokens: int = 64) -> str:
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "structured_outputs": {"grammar": grammar},
    }
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(("lang", "n", "unit"), WORDLISTS)
def test_word_list_answers_decoded_by_vllm_pass_the_independent_checker(
    vllm_server, compiler, lang, n, unit
) -> None:
    grammar = constraint(compiler, WordlistSpec(lang, n, unit)).exported_grammar().text
    prompt = {"es": "Cuéntame un cuento corto sobre un perro.", "en": "Tell me about a dog."}[lang]
    text = ask(vllm_server, grammar, prompt)
    assert text.strip(), text
    assert violations(text, lang, n, unit=unit) == [], text


def test_a_sound_exclusion_holds_but_required_words_need_the_gateways_steering(
    vllm_server, compiler
) -> None:
    no_r = constraint(compiler, constraint_spec("en", None, NO_R))
    text = ask(vllm_server, no_r.exported_grammar().text, "Tell me a short story about a dog.")
    assert no_r.check(text).ok, (text, no_r.check(text).violations)
    # The grammar of `include` allows every lexicon word: the required count is the gateway's
    # per-step steering, which a forwarded grammar cannot carry (the vLLM engine says so in
    # `constraint.enforcement`).
    both = constraint(compiler, constraint_spec("en", None, NO_R + THREE_S))
    assert both.exported_grammar().text == no_r.exported_grammar().text
