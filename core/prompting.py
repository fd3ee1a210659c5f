"""What the chat model is sent: the versioned system prompt file (front matter `version:`) and the
user message that carries the retrieved passages. Shared by the app, which answers with it, and by
fine-tuning, whose training examples must read exactly as the app's requests do."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


@dataclass(frozen=True)
class SystemPrompt:
    text: str
    version: str  # "<declared version>+<content hash>", so an unbumped edit is still traceable


def load_prompt(path: Path) -> SystemPrompt:
    """Read the prompt file; its front matter must declare `version:`."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read system prompt {path}: {exc}; set RAG_APP__PROMPT_PATH"
        ) from exc
    match = _FRONT.match(raw)
    declared = None
    if match:
        for line in match.group(1).splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "version":
                declared = value.strip()
    if not declared:
        raise ConfigError(f"system prompt {path} has no `version:` in its front matter")
    text = raw[match.end() :].strip()
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return SystemPrompt(text=text, version=f"{declared}+{digest}")


def number_passages(chunks: Sequence[str]) -> str:
    """Passages as the answerer sees them: `[1] text`, blank line between, in retrieval order."""
    return "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(chunks, start=1))


def context_message(question: str, chunks: Sequence[str]) -> str:
    """The user message of an answer request: the numbered passages, then the question."""
    return f"Context passages:\n\n{number_passages(chunks)}\n\nQuestion: {question}"


def chat_messages(system_prompt: str, question: str, chunks: Sequence[str]) -> list[dict[str, str]]:
    """The whole request in OpenAI chat format (role/content dicts): system prompt, then the
    question over its passages."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": context_message(question, chunks)},
    ]
