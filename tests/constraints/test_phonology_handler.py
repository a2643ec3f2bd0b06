"""`PhonologyHandler` behind the one `ConstraintCompiler`: cache by value, API errors that name
the constraint at fault, the backend check, preview and an unavailable lexicon."""

from __future__ import annotations

from typing import Any

import pytest
from phonology_cases import DZ_FINAL_SHORT

from wordlist_generation import errors
from wordlist_generation.constraints.compiler import ConstraintCompiler
from wordlist_generation.constraints.phonology import (
    Lexicon,
    PhonologicalConstraint,
    PhonologyHandler,
    parse_constraints,
)
from wordlist_generation.constraints.spec import PhonologicalSpec
from wordlist_generation.constraints.tokenizer import TokenizerTables
from wordlist_generation.engine.loader import default_cache_dir


@pytest.fixture(scope="module")
def compiler(lexicon: Lexicon, tables: TokenizerTables) -> ConstraintCompiler:
    compiler = ConstraintCompiler(cache_size=4)
    handler = PhonologyHandler(tables, default_cache_dir(), lexicon=lexicon)
    compiler.register(PhonologicalSpec, handler)
    return compiler


def test_handler_compiles_once_per_value(compiler: ConstraintCompiler) -> None:
    first = compiler.compile(PhonologicalSpec(parse_constraints(DZ_FINAL_SHORT), 5000))
    assert isinstance(first.constraint, PhonologicalConstraint) and not first.cache_hit
    again = [{**DZ_FINAL_SHORT[0], "phoneme2": "z"}, DZ_FINAL_SHORT[1]]  # equal after validation
    second = compiler.compile(PhonologicalSpec(parse_constraints(again), 5000))
    assert second.cache_hit and second.constraint is first.constraint
    other = compiler.compile(PhonologicalSpec(parse_constraints(DZ_FINAL_SHORT), 4000))
    assert not other.cache_hit and other.constraint.solution.base_size == 4000


def test_handler_maps_unsatisfiable_to_the_constraint_at_fault(
    compiler: ConstraintCompiler,
) -> None:
    raw = [{"type": "exclude", "phonemes": ["d"]}, DZ_FINAL_SHORT[0]]
    with pytest.raises(errors.UnsatisfiableConstraint) as exc:
        compiler.compile(PhonologicalSpec(parse_constraints(raw)))
    err = exc.value
    assert err.param == "constraints.0" and err.status_code == 422
    assert err.extra["constraint_index"] == 0
    assert err.extra["domain_sizes"]["phoneme1_words"] == 0
    assert len(compiler) == 0 or all(c["mode"] == "phonological" for c in compiler.cached())


def test_handler_refuses_another_backend(lexicon: Lexicon, tables: TokenizerTables) -> None:
    handler = PhonologyHandler(tables, default_cache_dir(), "lm-format-enforcer", lexicon=lexicon)
    with pytest.raises(errors.InvalidConstraint) as exc:
        handler.key(PhonologicalSpec(parse_constraints(DZ_FINAL_SHORT)))
    assert exc.value.param == "constraints" and "llguidance" in exc.value.message


def test_handler_preview_and_unavailable_lexicon(
    compiler: ConstraintCompiler,
    monkeypatch: pytest.MonkeyPatch,
    tables: TokenizerTables,
) -> None:
    handler = compiler.handler(PhonologicalSpec)
    assert isinstance(handler, PhonologyHandler)
    out = handler.preview(parse_constraints(DZ_FINAL_SHORT), None, 2)
    assert out["satisfiable"] is True and len(out["required"][0]["candidates"]) == 2

    def fail(*_: Any, **__: Any) -> Lexicon:
        raise OSError("disk full")

    monkeypatch.setattr(Lexicon, "load", fail)
    broken = PhonologyHandler(tables, default_cache_dir())
    with pytest.raises(errors.ApiError) as exc:
        broken.lexicon(timeout=60)
    assert exc.value.code == "lexicon_unavailable"
    with pytest.raises(errors.ApiError):
        broken.compile(PhonologicalSpec(parse_constraints(DZ_FINAL_SHORT)))
