"""Fail when a module of the package grows past the line limit.

A module long enough to need section comments is several modules (see the project's style notes);
the limit keeps that visible in `make lint`. Lines are counted as `wc -l` counts them.

Usage:
    python scripts/check_module_size.py                      # wordlist_generation/, 600 lines
    python scripts/check_module_size.py --max-lines 400 wordlist_generation/engine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = (REPO_ROOT / "wordlist_generation",)
MAX_LINES = 600


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def oversized(roots: list[Path], max_lines: int) -> list[tuple[Path, int]]:
    """Every `.py` file under `roots` with more than `max_lines` lines, longest first."""
    found = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            lines = count_lines(path)
            if lines > max_lines:
                found.append((path, lines))
    return sorted(found, key=lambda item: (-item[1], str(item[0])))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=list(DEFAULT_ROOTS))
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    args = parser.parse_args(argv)
    missing = [root for root in args.roots if not root.exists()]
    if missing:
        parser.error(f"no such path: {', '.join(map(str, missing))}")
    offenders = oversized(args.roots, args.max_lines)
    for path, lines in offenders:
        print(f"{_shown(path)}: {lines} lines (limit {args.max_lines})")
    if offenders:
        print(f"{len(offenders)} module(s) over {args.max_lines} lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
