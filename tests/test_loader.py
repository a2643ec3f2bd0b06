"""The converted-model cache: keyed by the GGUF's content, each file hashed once, stale copies gone.

A tiny GGUF written with the `gguf` package stands in for the real one and the dequantization is
replaced by a counter, so these tests never convert a model.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from wordlist_generation.engine import loader
from wordlist_generation.engine.loader import converted_gguf_dir


def write_gguf(path: Path, marker: int = 0) -> Path:
    """A valid GGUF of a few hundred bytes; `marker` changes its content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_uint32("test.marker", marker)
    writer.add_tensor("weight", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every conversion the cache asks for, done instantly (a directory with a config.json)."""
    calls: list[Path] = []
    lock = threading.Lock()

    def fake_convert(src_dir: Path, gguf_file: str, dest: Path) -> None:
        with lock:
            calls.append(dest)
        tmp = dest.with_name(f"{dest.name}.tmp-{len(calls)}")
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text("{}")
        os.replace(tmp, dest)

    monkeypatch.setattr(loader, "_convert_gguf", fake_convert)
    return calls


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_same_bytes_at_two_paths_share_one_conversion(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    first = write_gguf(tmp_path / "venv-a" / "model.gguf")
    second = tmp_path / "venv-b" / "model.gguf"
    second.parent.mkdir()
    shutil.copyfile(first, second)

    assert converted_gguf_dir(first, cache) == converted_gguf_dir(second, cache)
    assert len(conversions) == 1


def test_a_new_mtime_does_not_convert_again(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    gguf = write_gguf(tmp_path / "model.gguf")
    before = converted_gguf_dir(gguf, cache)
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    assert converted_gguf_dir(gguf, cache) == before
    assert len(conversions) == 1
    assert (before / "config.json").exists()


def test_each_file_is_hashed_once(
    tmp_path: Path, cache: Path, conversions: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = loader.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(loader, "sha256_file", counting)
    gguf = write_gguf(tmp_path / "model.gguf")
    for _ in range(3):
        converted_gguf_dir(gguf, cache)
    assert len(hashed) == 1
    assert len(conversions) == 1


def test_new_content_replaces_the_stale_conversion(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    gguf = write_gguf(tmp_path / "model.gguf", marker=1)
    old = converted_gguf_dir(gguf, cache)
    write_gguf(gguf, marker=2)  # an upgrade of the package rewrites the file in place

    new = converted_gguf_dir(gguf, cache)
    assert new != old
    assert (new / "config.json").exists()
    assert not old.exists()
    assert len(conversions) == 2


def test_a_conversion_another_path_still_uses_is_kept(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    a = converted_gguf_dir(write_gguf(tmp_path / "venv-a" / "model.gguf", marker=1), cache)
    b = converted_gguf_dir(write_gguf(tmp_path / "venv-b" / "model.gguf", marker=2), cache)
    assert a != b
    assert (a / "config.json").exists() and (b / "config.json").exists()


def test_a_removed_checkout_frees_its_conversion(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    gone = write_gguf(tmp_path / "old-venv" / "model.gguf", marker=1)
    old = converted_gguf_dir(gone, cache)
    shutil.rmtree(gone.parent)

    converted_gguf_dir(write_gguf(tmp_path / "new-venv" / "model.gguf", marker=2), cache)
    assert not old.exists()


def test_path_keyed_conversions_and_abandoned_temp_dirs_are_removed(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    models = cache / "models"
    legacy = models / "model-0123456789ab"  # the former (path, mtime) key
    abandoned = models / "model-0123456789abcdef.tmp-k2j4"  # a conversion killed halfway
    other = models / "tiny-llama-smollm2-v1"  # not a conversion of this GGUF: left alone
    for d in (legacy, abandoned, other):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    long_ago = abandoned.stat().st_mtime_ns - 2 * loader.ABANDONED_TMP_SECONDS * 10**9
    os.utime(abandoned, ns=(long_ago, long_ago))

    dest = converted_gguf_dir(write_gguf(tmp_path / "model.gguf"), cache)
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == sorted([dest.name, other.name])


def test_a_corrupt_index_is_rebuilt_without_converting_again(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    gguf = write_gguf(tmp_path / "model.gguf")
    dest = converted_gguf_dir(gguf, cache)
    (cache / "models" / loader.INDEX_NAME).write_text("{not json")

    assert converted_gguf_dir(gguf, cache) == dest
    assert len(conversions) == 1


def test_workers_starting_together_convert_once_and_all_are_indexed(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    first = write_gguf(tmp_path / "w0" / "model.gguf")
    paths = [first]
    for i in range(1, 4):
        (tmp_path / f"w{i}").mkdir()
        paths.append(Path(shutil.copyfile(first, tmp_path / f"w{i}" / "model.gguf")))
    barrier = threading.Barrier(len(paths))
    results: dict[int, Path] = {}

    def start(i: int) -> None:
        barrier.wait()
        results[i] = converted_gguf_dir(paths[i], cache)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(set(results.values())) == 1
    assert len(conversions) == 1
    index = loader.read_index(cache / "models" / loader.INDEX_NAME)
    assert sorted(index) == sorted(str(p.resolve()) for p in paths)


def test_a_symlink_resolves_to_the_file_it_names(
    tmp_path: Path, cache: Path, conversions: list[Path]
) -> None:
    real = write_gguf(tmp_path / "store" / "real.gguf")
    link = tmp_path / "model.gguf"
    link.symlink_to(real)

    dest = converted_gguf_dir(link, cache)
    assert (dest / "config.json").exists()
    assert converted_gguf_dir(real, cache) == dest
    assert len(conversions) == 1
