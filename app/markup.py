"""Chat text as the browser gets it: Markdown may render, raw HTML never does (from a document
quoted in an answer, from a model, or typed by the user). Pure functions."""

from __future__ import annotations

import html
import re

# Code is left alone: Markdown shows code spans and fenced blocks as text already.
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]+`)", re.DOTALL)


def safe_markdown(text: str) -> str:
    """`text` with `&` and `<` escaped outside code, so no tag or entity of its own can form;
    the Markdown around them (emphasis, lists, links, quotes, code) still renders."""
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # even indexes are outside code
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;")
    return "".join(parts)


def plain_text(shown: str) -> str:
    """What the user saw as text, from a message `safe_markdown` made (for the chat history)."""
    return html.unescape(shown)


_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1", re.DOTALL)
_QUOTE_MARK = re.compile(r"^\s*>\s?", re.MULTILINE)
_FENCE_MARK = re.compile(r"^\s*(```|~~~)[^\n]*$", re.MULTILINE)
_SPAN = re.compile(r"`([^`]+)`")


def plain_markdown(text: str) -> str:
    """Chat Markdown as one line of plain text, for a table cell that does not render it: bold
    and quote marks, code fences and backticks taken out, the words kept."""
    text = _FENCE_MARK.sub(" ", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _QUOTE_MARK.sub("", text)
    text = _SPAN.sub(r"\1", text)
    return " ".join(text.split())
