"""Shared fixtures: the real SmolLM2 tokenizer, the embedded model directory, a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from wordlist_generation.engine.loader import build_tiny_model, default_cache_dir, embedded_model_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 model converted once to safetensors (cached across runs)."""
    return embedded_model_dir()


@pytest.fixture(scope="session")
def smollm_tokenizer(embedded_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_dir: Path) -> Path:
    """A random-weight 2-layer Llama with the real SmolLM2 tokenizer (fast, realistic masking)."""
    return build_tiny_model(default_cache_dir() / "models" / "tiny-llama-smollm2-v1", embedded_dir)
