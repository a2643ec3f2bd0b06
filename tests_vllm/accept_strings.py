"""Accept/reject verdicts of llguidance for Lark grammars and sample strings (stdin: JSON
{"model": dir, "grammars": {name: {"grammar": text, "samples": [...]}}}; stdout: JSON verdicts).

Run with the project's python and with the vLLM venv's: the two llguidance versions must agree.
A string is accepted when its canonical tokenization is consumed and the matcher may stop there.
"""

from __future__ import annotations

import json
import sys

import llguidance
import llguidance.hf
from transformers import AutoTokenizer


def main() -> None:
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(request["model"])
    lltok = llguidance.hf.from_tokenizer(tokenizer)
    out = {}
    for name, item in request["grammars"].items():
        grammar = llguidance.LLMatcher.grammar_from_lark(item["grammar"])
        verdicts = {}
        for text in item["samples"]:
            matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
            if matcher.get_error():
                verdicts[text] = "error: " + matcher.get_error()
                continue
            ids = tokenizer.encode(text, add_special_tokens=False)
            verdicts[text] = bool(
                matcher.consume_tokens(ids) and not matcher.is_error() and matcher.is_accepting()
            )
        out[name] = verdicts
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
