"""The one bitmask helper and the one separator rule, without any model or tokenizer."""

from __future__ import annotations

import re

import numpy as np
import torch

from wordlist_generation.constraints.bitmask import (
    copy_into,
    ids_to_bool,
    pack,
    pack_bool,
    unpack,
    unpack_into,
    words32,
)
from wordlist_generation.constraints.separators import (
    CLOSING,
    OPENING,
    SeparatorRegexes,
    separator_regexes,
)


def test_pack_unpack_round_trip() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 31, 32, 33, 100, 49_152):
        bits = rng.random(n) < 0.3
        row = pack(bits, words32(n))
        assert row.dtype == torch.int32 and row.shape == (words32(n),)
        assert np.array_equal(unpack(row, n).numpy(), bits)
        again = torch.zeros(words32(n), dtype=torch.int32)
        pack_bool(torch.from_numpy(bits), again)
        assert torch.equal(again, row)


def test_bit_layout_and_partial_copies() -> None:
    row = pack(ids_to_bool([0, 33, 63], 64), 2)
    assert int(row[0]) == 1 and int(row[1]) & 0xFFFFFFFF == (1 << 1) | (1 << 31)
    allowed = torch.zeros(40, dtype=torch.bool)
    allowed[39] = True
    unpack_into(row, allowed, vocab_size=34)  # bits of tokens >= 34 are not looked at
    assert allowed.nonzero().flatten().tolist() == [0, 33, 39]
    short = torch.zeros(1, dtype=torch.int32)
    copy_into(short, row)
    assert int(short[0]) == 1


def test_separator_regexes() -> None:
    rx = separator_regexes()
    gap = re.compile(rx.gap)
    for text in (" ", ", ", " - ", ".\n\n", "? ¡", " » ", ", — ", "\n"):
        assert gap.fullmatch(text), text
    for text in ("", "  ", "\t", ",,,,, ", "\n\n\n", "- "):
        assert not gap.fullmatch(text), text
    assert all(re.fullmatch(rx.lead, c) for c in OPENING)
    assert all(re.fullmatch(rx.tail, c) for c in CLOSING)
    assert rx.gap_lark == f"/{rx.gap}/" and rx.lead_lark.startswith("/")
    tight = separator_regexes(allow_newlines=False, max_closing=1, space_before_closing=False)
    assert isinstance(tight, SeparatorRegexes)
    assert not re.fullmatch(tight.gap, "\n") and not re.fullmatch(tight.tail, " .")
    assert not re.fullmatch(tight.tail, "..")
