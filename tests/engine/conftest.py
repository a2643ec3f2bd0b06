"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest

from wordlist_generation.engine import quant


@pytest.fixture
def dense_rows(monkeypatch) -> list[int]:
    """Rows of every fp32 GEMM over a dense copy, in call order (`QuantizedLinear.dense_kernel`
    calls `F.linear`; nothing else in a fully quantized model does), whichever thread makes it."""
    rows: list[int] = []
    linear = quant.F.linear

    def counting(x, weight, bias=None):
        rows.append(x.shape[0])
        return linear(x, weight, bias)

    monkeypatch.setattr(quant.F, "linear", counting)
    return rows
