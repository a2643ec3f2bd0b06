"""A chat app on the fake engine whose start-up and generations wait for files to appear.

Started by the browser tests as a real server (`uvicorn gated_app:app`, with this folder on the
path), so that the page's status chip can be watched while the server honestly says `loading`
(until `GATE_FILE` exists) and `busy` (each generation waits for `HOLD_FILE`, when set). No timing
is involved: the test creates the files when it has seen what it wanted to see.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: fakes

from fakes import FakeEngine  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from wordlist_generation.apps import create_chat_app  # noqa: E402
from wordlist_generation.engine.loader import embedded_model_dir  # noqa: E402

REPLY = "The cat sat on the mat. The dog ran to the cat."


def _wait_for(path: str | None) -> None:
    while path and not Path(path).exists():
        time.sleep(0.05)


class GatedEngine(FakeEngine):
    """`tokenizer` (read first thing by the app's start-up) waits for `GATE_FILE`; `generate`
    waits for `HOLD_FILE`."""

    @property
    def tokenizer(self):  # noqa: ANN201
        _wait_for(os.environ.get("GATE_FILE"))
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:  # noqa: ANN001
        self._tokenizer = value

    def generate(self, jobs):  # noqa: ANN001, ANN201
        _wait_for(os.environ.get("HOLD_FILE"))
        return super().generate(jobs)


app = create_chat_app(
    engine=GatedEngine(AutoTokenizer.from_pretrained(str(embedded_model_dir())), REPLY)
)
