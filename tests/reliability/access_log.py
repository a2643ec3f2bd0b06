"""Reading a server log: its JSON access-log records."""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "wordlist_generation.access: "


def access_lines(log_path: Path) -> list[dict]:
    """The JSON access-log records of a server log, in order."""
    out = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").split("\n"):
        if MARKER in line:
            out.append(json.loads(line.split(MARKER, 1)[1]))
    return out
