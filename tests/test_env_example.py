""".env.example documents every settings field exactly once, each with a comment, and loads."""

from __future__ import annotations

import re
from pathlib import Path

from wordlist_generation.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
#: `NAME=value`, or `# NAME=value` for a field left at its documented default.
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=")


def entries() -> list[tuple[int, str, bool]]:
    """(line index, field name, active) for every assignment line of the example."""
    found = []
    for i, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()):
        m = ASSIGNMENT.match(line)
        if m:
            found.append((i, m.group(2), m.group(1) is None))
    return found


def test_lists_exactly_the_settings_fields() -> None:
    names = [name for _, name, _ in entries()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"
    fields = set(Settings.model_fields)
    assert not fields - set(names), f"missing from .env.example: {sorted(fields - set(names))}"
    assert not set(names) - fields, f"not settings fields: {sorted(set(names) - fields)}"


def test_every_field_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, name, _ in entries():
        above = lines[i - 1] if i > 0 else ""
        assert above.startswith("#") and not ASSIGNMENT.match(above), f"{name} has no comment"


def test_loads_as_valid_settings(monkeypatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=ENV_EXAMPLE)
    active = {name for _, name, active in entries() if active}
    assert "DEFAULT_NUM_BEAMS" in active and settings.DEFAULT_NUM_BEAMS < 10
    assert settings.CHAT_PORT != settings.BATCH_PORT
