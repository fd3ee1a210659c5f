"""Chat-format training examples for the validator and CLI tests, and the word-count tokenizer
their token figures are worked out with."""

from __future__ import annotations

import json


def words(text: str) -> int:
    return len(text.split())


def good(i: int = 0, system: bool = True) -> str:
    messages = [{"role": "system", "content": "Be brief."}] if system else []
    messages += [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"answer {i}", "weight": 1},
    ]
    return json.dumps({"messages": messages})
