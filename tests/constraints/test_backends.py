"""Both backends against each other and against the regex, with the real SmolLM2 tokenizer and no
model: character-level acceptance, token replay of the tokenizer's own encodings, masks step by
step, the partial-UTF-8 limit of lm-format-enforcer, and the word-list handler behind the
compiler's cache."""

from __future__ import annotations

import random
import re
import threading
import time

import pytest
import torch

from wordlist_generation import errors
from wordlist_generation.constraints.base import ExportedGrammar
from wordlist_generation.constraints.bitmask import unpack
from wordlist_generation.constraints.compiler import ConstraintCompiler
from wordlist_generation.constraints.llg import compile_lark
from wordlist_generation.constraints.separators import CLOSING, DASHES, OPENING
from wordlist_generation.constraints.spec import WordlistSpec
from wordlist_generation.constraints.tokenizer import TokenizerTables
from wordlist_generation.constraints.wordlist.compile import (
    WordlistHandler,
    prebuild,
    wordlist_compiler,
)
from wordlist_generation.constraints.wordlist.constraint import WordlistConstraint, prompt_hint
from wordlist_generation.constraints.wordlist.grammar import (
    answer_regex,
    compile_words,
    lark_grammar,
)
from wordlist_generation.constraints.wordlist.lists import (
    WordlistRegistry,
    capitalized,
    default_wordlist_dir,
)
from wordlist_generation.constraints.wordlist.lmfe import LmfeWordlist


@pytest.fixture(scope="module")
def registry() -> WordlistRegistry:
    return WordlistRegistry(default_wordlist_dir())


@pytest.fixture(scope="module")
def tables(smollm_tokenizer) -> TokenizerTables:
    return TokenizerTables(smollm_tokenizer)


@pytest.fixture(scope="module")
def llg(smollm_tokenizer, registry, tables) -> ConstraintCompiler:
    c = wordlist_compiler(smollm_tokenizer, registry, tables=tables, background_warm=False)
    _handler(c).warmup()
    return c


@pytest.fixture(scope="module")
def lmfe(smollm_tokenizer, registry, tables) -> ConstraintCompiler:
    c = wordlist_compiler(
        smollm_tokenizer,
        registry,
        backend="lm-format-enforcer",
        tables=tables,
        background_warm=False,
    )
    _handler(c).warmup()
    return c


def _handler(compiler: ConstraintCompiler) -> WordlistHandler:
    handler = compiler.handler(WordlistSpec)
    assert isinstance(handler, WordlistHandler)
    return handler


def _get(compiler: ConstraintCompiler, lang: str, n: int) -> tuple[WordlistConstraint, bool]:
    compiled = compiler.compile(WordlistSpec(lang, n))
    assert isinstance(compiled.constraint, WordlistConstraint)
    return compiled.constraint, compiled.cache_hit


@pytest.fixture(scope="module")
def whole_utf8(tables) -> torch.Tensor:
    """Tokens lm-format-enforcer can represent: non-special and whole UTF-8 by themselves."""
    out = torch.zeros(tables.vocab_size, dtype=torch.bool)
    for i, b in enumerate(tables.token_bytes):
        if i in tables.special or not b:
            continue
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out[i] = True
    return out


# ------------------------------------------------------------------------------ string sets


def _answers(rng: random.Random, words: list[str], n: int) -> list[str]:
    gaps = [" ", ", ", ". ", "? ", "! ", "... ", " - ", ", — ", "\n", ".\n\n", ": «", " (",
            ") ", '" ', "; ", " ¿", "? ¡", "… ", " » ", "\n— ", " ! "]  # fmt: skip
    leads = ["", "", "", "¿", "«", "(", "¡"]
    tails = ["", "", ".", "?", "!", "...", '."', " !", "»"]
    out = []
    for _ in range(n):
        parts = [rng.choice(leads)]
        for i in range(rng.randint(1, 6)):
            if i:
                parts.append(rng.choice(gaps))
            w = rng.choice(words)
            parts.append((capitalized(w) or w) if rng.random() < 0.25 else w)
        parts.append(rng.choice(tails))
        out.append("".join(parts))
    return out


def _mutants(rng: random.Random, texts: list[str], beyond: list[str]) -> list[str]:
    out = []
    for t in texts:
        kind = rng.randrange(4)
        if kind == 0:  # a word outside the top N
            words = t.split(" ")
            words[rng.randrange(len(words))] = rng.choice(beyond)
            out.append(" ".join(words))
        else:
            i = rng.randrange(len(t) + 1)
            junk = rng.choice(["  ", "\t", "7", "#", "zq", "-", "\n\n\n", ",,,,,", " ", "¿"])
            out.append(t[:i] + junk + t[i:])
    return out


def _strings(registry, lang: str, n: int, count: int, seed: int) -> tuple[list[str], list[str]]:
    wl = registry.get(lang)
    top = wl.top(n)
    full = [w for w in top if not w.endswith("'")]
    clitics = [w for w in top if w.endswith("'")]
    rng = random.Random(seed)
    valid = _answers(rng, full, count)
    if clitics:  # attach clitics to vowel-initial words in a third of them
        vowel = [w for w in full if w[0] in "aeiouéèh"]
        valid = [
            f"{rng.choice(clitics)}{rng.choice(vowel)} {v}" if k % 3 == 0 else v
            for k, v in enumerate(valid)
        ]
    top_set = set(top)
    beyond = [w for w in wl.words[n : n + 3000] if w not in top_set and "'" not in w]
    return valid, _mutants(rng, valid, beyond)


# ------------------------------------------------------------------------------ acceptance


@pytest.mark.parametrize(("lang", "n"), [("es", 1000), ("es", 3000), ("fr", 1000)])
def test_backends_accept_exactly_the_same_strings(llg, lmfe, registry, lang, n) -> None:
    c1, _ = _get(llg, lang, n)
    c2, _ = _get(lmfe, lang, n)
    rx = re.compile(answer_regex(compile_words(registry.get(lang).top(n))))
    valid, invalid = _strings(registry, lang, n, 150, seed=n)
    rejected = 0
    for text in valid + invalid:
        expected = bool(rx.fullmatch(text))
        assert c1.accepts(text) == expected, ("llguidance", text)
        assert c2.accepts(text) == expected, ("lm-format-enforcer", text)
        if text in valid:
            assert expected, text
        else:
            rejected += not expected
    assert rejected > 100


# ------------------------------------------------------------------------------ token replay


def _has_partial_utf8(tables: TokenizerTables, ids: list[int]) -> bool:
    for i in ids:
        try:
            tables.token_bytes[i].decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _mask(seq, n: int) -> torch.Tensor:
    allowed = torch.zeros(n, dtype=torch.bool)
    seq.fill_allowed(allowed)
    return allowed


def _replay(constraint: WordlistConstraint, ids: list[int], n: int) -> bool:
    """Does the tokenizer's own encoding pass the token masks, and end where EOS is allowed?"""
    seq = constraint.start()
    for tok in ids:
        if not _mask(seq, n)[tok] or not seq.advance(tok):
            return False
    return seq.can_end()


def test_replay_of_the_tokenizers_own_encodings(llg, lmfe, registry, tables, smollm_tokenizer):
    c1, _ = _get(llg, "es", 1000)
    c2, _ = _get(lmfe, "es", 1000)
    valid, invalid = _strings(registry, "es", 1000, 30, seed=11)
    n = tables.vocab_size
    seen_partial = 0
    for text in valid + invalid:
        ids = smollm_tokenizer.encode(text, add_special_tokens=False)
        expected = c1.accepts(text)
        assert _replay(c1, ids, n) == expected, ("llguidance", text)
        if _has_partial_utf8(tables, ids):
            seen_partial += 1
            assert not _replay(c2, ids, n), text  # see test_partial_utf8_*
        else:
            assert _replay(c2, ids, n) == expected, ("lm-format-enforcer", text)
    assert seen_partial  # ¿ and ¡ after a space are in the sample


@pytest.mark.parametrize(("lang", "n"), [("es", 1000), ("fr", 1000)])
def test_masks_agree_at_every_step(
    llg, lmfe, registry, tables, smollm_tokenizer, whole_utf8, lang, n
):
    """The cached llguidance masks equal llguidance's uncached exact masks and a plain matcher
    over the full vocabulary; lm-format-enforcer's equal them on the tokens it can represent."""
    c1, _ = _get(llg, lang, n)
    c2, _ = _get(lmfe, lang, n)
    plain = compile_lark(tables, c1.backend_impl.grammar)
    valid, _ = _strings(registry, lang, n, 4, seed=5)
    v = tables.vocab_size
    special = torch.zeros(v, dtype=torch.bool)
    special[list(tables.special)] = True
    for text in valid:
        ids = smollm_tokenizer.encode(text, add_special_tokens=False)
        fast, ref, enf = c1.start(), plain.start(), c2.start()
        lmfe_ok = not _has_partial_utf8(tables, ids)
        for k, tok in enumerate(ids):
            m_fast, m_ref = _mask(fast, v), _mask(ref, v)
            assert torch.equal(m_fast, m_ref), (text, k)
            if text is valid[0]:  # uncached exact masks are slow: one text is enough
                assert torch.equal(unpack(fast.exact(), v), m_ref), (text, k)
            assert not (m_fast & special).any()
            if lmfe_ok:
                m_enf = _mask(enf, v)
                assert torch.equal(m_enf, m_ref & whole_utf8), (text, k)
                assert enf.can_end() == fast.can_end()
                assert enf.advance(tok)
            assert fast.advance(tok) and ref.advance(tok), (text, k)
            assert fast.can_end() == ref.can_end()
        assert fast.can_end()


def test_forked_states_are_independent(llg, smollm_tokenizer, tables) -> None:
    c, _ = _get(llg, "es", 1000)
    seq = c.start()
    for tok in smollm_tokenizer.encode("Hola, ¿", add_special_tokens=False):
        assert seq.advance(tok)
    a, b = seq.fork(), seq.fork()
    for tok in smollm_tokenizer.encode("qué", add_special_tokens=False):
        assert a.advance(tok)
    assert a.can_end() and not b.can_end() and not seq.can_end()
    assert not torch.equal(_mask(a, tables.vocab_size), _mask(b, tables.vocab_size))
    assert torch.equal(_mask(b, tables.vocab_size), _mask(seq, tables.vocab_size))


def test_rejects_special_and_out_of_range_tokens(llg, lmfe, tables) -> None:
    for comp in (llg, lmfe):
        c, _ = _get(comp, "es", 1000)
        for tok in (0, 1, 2, tables.vocab_size, tables.vocab_size + 5):
            assert not c.start().advance(tok), (c.backend, tok)


# ------------------------------------------------------------------------------ partial UTF-8


def test_partial_utf8_tokens_in_the_canonical_encoding(smollm_tokenizer, tables) -> None:
    """SmolLM2 writes ` ¿` and ` ¡` (and `¡` alone) with tokens that are not whole UTF-8."""
    for text in (" ¿", " ¡", "¡"):
        ids = smollm_tokenizer.encode(text, add_special_tokens=False)
        assert _has_partial_utf8(tables, ids), text
    assert not _has_partial_utf8(tables, smollm_tokenizer.encode("¿", add_special_tokens=False))


def test_partial_utf8_only_lm_format_enforcer_is_limited(llg, lmfe, smollm_tokenizer, tables):
    c1, _ = _get(llg, "es", 1000)
    c2, _ = _get(lmfe, "es", 1000)
    n = tables.vocab_size
    tok = smollm_tokenizer
    for text in ("Hola ¿qué?", "Sí ¡no!", "¡Hola!"):
        ids = tok.encode(text, add_special_tokens=False)
        assert c1.accepts(text) and c2.accepts(text)  # same strings...
        assert _replay(c1, ids, n)  # llguidance takes the tokenizer's own encoding
        assert not _replay(c2, ids, n)  # lm-format-enforcer cannot take its partial tokens
    # ` ¿` is still reachable for lm-format-enforcer through the non-canonical " " + "¿" ...
    space, inv_q = tok.convert_tokens_to_ids(["Ġ", "Â¿"])
    alt = tok.encode("Hola", add_special_tokens=False) + [space, inv_q]
    alt += tok.encode("qué?", add_special_tokens=False)
    assert tok.decode(alt) == "Hola ¿qué?"
    assert _replay(c2, alt, n) and _replay(c1, alt, n)
    # ... but no whole-UTF-8 token contains `¡`: lm-format-enforcer can never write it.
    strs = []
    for i, b in enumerate(tables.token_bytes):
        if i not in tables.special:
            try:
                strs.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                pass
    alphabet = "".join(strs)
    punct = set(OPENING + CLOSING + DASHES)
    assert sorted(c for c in punct if c not in alphabet) == ["¡"]
    # Capitalized accented initials are also out of its reach (`Él`, `Über`, `Ça`).
    for ch in "ÀÈÜÑ":
        assert ch not in alphabet


def test_lm_format_enforcer_cannot_start_a_word_with_some_accented_capitals(lmfe, llg, tables):
    words = ("árbol", "über", "ñu")
    c1 = compile_lark(tables, lark_grammar(compile_words(words)))
    c2 = LmfeWordlist(compile_words(words), tables)
    v = tables.vocab_size
    for w in words:
        cap = capitalized(w)
        assert c1.accepts(cap) and c2.accepts(cap)
        first = _mask(c2.start(), v)
        assert not any(
            tables.token_bytes[i].decode("utf-8", "replace").startswith(cap[0])
            for i in first.nonzero().flatten().tolist()
        ), cap
    assert any(
        tables.token_bytes[i].startswith("Á".encode()[:1])
        for i in _mask(c1.start(), v).nonzero().flatten().tolist()
    )


# ------------------------------------------------------------------------------ compiler


def test_compiler_caches_describes_and_hints(llg) -> None:
    c, hit = _get(llg, "es", 1000)
    c_again, hit_again = _get(llg, "es", 1000)
    assert c is c_again and hit_again
    d = c.describe()
    assert d["vocab_lang"] == "es" and d["vocab_n_words"] == 1000 and d["backend"] == "llguidance"
    assert len(d["sha256"]) == 64 and d["compile_seconds"] > 0
    assert c.prompt_hint() == prompt_hint("es") and "Spanish" in c.prompt_hint()
    assert c.check("Hola, ¿qué tal?").ok
    report = c.check("hola 42 xyzzy")
    assert not report.ok and len(report.violations) == 2
    assert c.finalize("Hola, ¿qu", complete=False) == "Hola,"
    assert c.releasable("Hola, ¿qu") == len("Hola,")
    assert _handler(llg).backend_name == "llguidance"
    assert llg.cached()[-1]["sha256"] == d["sha256"]


def test_exported_grammar_is_the_lark_grammar_llguidance_compiles(llg, lmfe, tables) -> None:
    c1, _ = _get(llg, "es", 1000)
    c2, _ = _get(lmfe, "es", 1000)
    exported = c1.exported_grammar()
    assert isinstance(exported, ExportedGrammar) and exported.syntax == "lark"
    assert exported.text == c1.backend_impl.grammar == c2.exported_grammar().text
    assert "split" in exported.tokenizer_note
    plain = compile_lark(tables, exported.text)  # over the tokenizer's own vocabulary
    assert plain.accepts("Hola, ¿qué tal?") and not plain.accepts("hola 42")


@pytest.mark.parametrize(
    ("lang", "n", "error", "param", "message"),
    [
        ("xx", 100, errors.WordlistNotFound, "vocab_lang", "no word list for language 'xx'; "),
        ("e s", 100, errors.InvalidRequest, "vocab_lang", "vocab_lang must match"),
        ("es", 0, errors.InvalidRequest, "vocab_n_words", "vocab_n_words must be between 1 and"),
        ("it", 10**9, errors.InvalidRequest, "vocab_n_words", "(the length of the 'it' list)"),
    ],
)
def test_compiler_errors_name_the_field(llg, lang, n, error, param, message) -> None:
    with pytest.raises(error) as info:
        _get(llg, lang, n)
    assert info.value.param == param and message in info.value.message
    if error is errors.WordlistNotFound:
        assert "available: de, en, es" in info.value.message


def test_empty_list_is_a_400(tmp_path, smollm_tokenizer, tables) -> None:
    (tmp_path / "zz.txt").write_text("# nothing\n42\n", encoding="utf-8")
    comp = wordlist_compiler(smollm_tokenizer, WordlistRegistry(tmp_path), tables=tables)
    with pytest.raises(errors.InvalidRequest) as info:
        _get(comp, "zz", 1)
    assert info.value.param == "vocab_lang" and info.value.message == (
        "the word list for 'zz' is empty"
    )


def test_unknown_backend(tables, registry) -> None:
    with pytest.raises(ValueError):
        WordlistHandler(tables, registry, backend="nope")


def test_compiler_lru_and_single_flight(smollm_tokenizer, registry, tables, monkeypatch) -> None:
    comp = wordlist_compiler(
        smollm_tokenizer, registry, cache_size=2, tables=tables, background_warm=False
    )
    handler = _handler(comp)
    calls: list[tuple[str, int]] = []
    gate = threading.Event()
    real = handler.compile

    def slow_compile(spec):
        calls.append((spec.lang, spec.n_words))
        gate.wait(5)
        return real(spec)

    monkeypatch.setattr(handler, "compile", slow_compile)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(_get(comp, "es", 200))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    while not calls:
        threading.Event().wait(0.01)
    gate.set()
    for t in threads:
        t.join()
    assert calls == [("es", 200)]
    assert len({id(c) for c, _ in results}) == 1
    _get(comp, "es", 300)
    _get(comp, "fr", 200)  # evicts es/200 (least recently used)
    assert len(comp.cached()) == 2
    _get(comp, "es", 200)
    assert calls[-1] == ("es", 200) and len(calls) == 4
    prebuild(comp, ["fr", "es"], [200])
    assert len(calls) == 4


def test_background_warm_fills_the_caches(smollm_tokenizer, registry, tables) -> None:
    comp = wordlist_compiler(smollm_tokenizer, registry, tables=tables, warm_words=100)
    c, _ = _get(comp, "pt", 500)
    # (No check of the cache size right here: the warm thread may already be running.)
    deadline = time.monotonic() + 60
    while c.warm_seconds is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.warm_seconds is not None and c.warm(100) == c.warm_seconds  # warmed once
    assert len(c.backend_impl.pure_masks) > 20 and len(c.backend_impl.ws_parts) > 5


def test_the_whole_list_and_prebuild_beyond_it(llg, registry, tmp_path, smollm_tokenizer, tables):
    """A request may ask for the whole list, not more; `prebuild` reads a larger count as the
    whole list."""
    size = len(registry.get("it"))
    c, _ = _get(llg, "it", size)
    assert c.n_words == size
    (tmp_path / "zz.txt").write_text("hola\nmundo\ncasa\n", encoding="utf-8")
    comp = wordlist_compiler(
        smollm_tokenizer, WordlistRegistry(tmp_path), tables=tables, background_warm=False
    )
    prebuild(comp, ["zz"], [10])
    small, hit = _get(comp, "zz", 3)
    assert hit and small.n_words == 3 and small.warm_seconds is not None


def test_generic_lark_grammar(tables, smollm_tokenizer) -> None:
    g = compile_lark(tables, 'start: ("ab" | "cd")+')
    assert g.accepts("abcdab") and not g.accepts("abc")
    seq = g.start()
    for tok in smollm_tokenizer.encode("abcd", add_special_tokens=False):
        assert _mask(seq, tables.vocab_size)[tok]
        assert seq.advance(tok)
    assert seq.can_end()
    with pytest.raises(ValueError):
        compile_lark(tables, "start: (")
