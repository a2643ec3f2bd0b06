"""The constraint cache's byte bound holds in measured private memory: word lists compiled,
warmed and used one after another through a small cache never grow the process's RssAnon past
`CONSTRAINT_CACHE_MB` + 10 % (the full-size run: scripts/bench_cache_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_full_cache_stays_within_its_byte_bound(tmp_path: Path) -> None:
    out = tmp_path / "cache_memory.json"
    budget = 96
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_cache_memory.py"),
            "--budget-mb", str(budget),
            "--sizes", "2000,5000",
            "--langs", "es,en,fr",
            "--texts", "10",
            "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["peak_growth_mib"] <= budget * 1.1
    # The cache really was full: entries were evicted to stay within the budget.
    assert min(r["entries"] for r in result["rows"][3:]) < len(result["rows"])
    assert all(r["cached_mib"] <= budget for r in result["rows"])
