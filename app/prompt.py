"""The versioned system prompt: a Markdown file whose front matter names its version."""

from __future__ import annotations

import hashlib
import re
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
