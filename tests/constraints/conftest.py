"""Fixtures shared by the phonological-mode tests."""

from __future__ import annotations

from typing import Any

import pytest
from phonology_cases import load_lexicon

from wordlist_generation.constraints.phonology import Lexicon
from wordlist_generation.constraints.tokenizer import TokenizerTables


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return load_lexicon()


@pytest.fixture(scope="module")
def tables(smollm_tokenizer: Any) -> TokenizerTables:
    return TokenizerTables(smollm_tokenizer)
