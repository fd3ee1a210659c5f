"""The versioned system prompt: a Markdown file whose front matter names its version. It lives in
core.prompting (fine-tuning writes training examples with it too); re-exported for the app."""

from __future__ import annotations

from core.prompting import SystemPrompt, load_prompt

__all__ = ["SystemPrompt", "load_prompt"]
