"""The system prompt the chat model answers with: the versioned Markdown file bundled here
(`prompts/system.md`, front matter `version:`), or the one RAG_APP__PROMPT_PATH names. Fine-tuning
reads it through here too, so training examples read exactly as the app's requests do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.prompting import SystemPrompt, load_prompt

if TYPE_CHECKING:
    from core.settings import Settings

BUNDLED_PROMPT = Path(__file__).resolve().parent / "prompts" / "system.md"


def system_prompt(settings: Settings) -> SystemPrompt:
    """The configured prompt file, else the bundled one."""
    return load_prompt(settings.app.prompt_path or BUNDLED_PROMPT)
