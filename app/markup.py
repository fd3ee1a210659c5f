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


# Markdown as a reader sees it rendered: code spans without their backticks (a span may cross one
# line break, as wrapped source text has them), emphasis without its stars, links as their text,
# headings without their hashes, list items with a bullet; fenced code as written, fences gone.
_MD_MARKUP = (
    (re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`"), r"\1"),
    # Underscores inside a word never emphasise (RAG_FINETUNE__TEACHER__MODEL stays whole).
    (re.compile(r"\*\*([^*\n]+)\*\*|(?<!\w)__([^_\n]+)__(?!\w)"), r"\1\2"),
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])|(?<!\w)_([^_\n]+)_(?!\w)"), r"\1\2"),
    (re.compile(r"!?\[([^\]\n]+)\]\([^)\s]+\)"), r"\1"),
    (re.compile(r"^ {0,3}#{1,6}\s+", re.MULTILINE), ""),
    (re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE), "\\1• "),
)
_QUOTE_MARK = re.compile(r"^\s*>\s?", re.MULTILINE)
# Around fenced code in what `plain_markdown(..., mark_code=True)` returns: characters no text
# holds, that survive HTML escaping, for the sources panel to show the code as code.
CODE_START, CODE_END = "\x02", "\x03"


def plain_markdown(text: str, mark_code: bool = False) -> str:
    """`text` without Markdown's markup characters, as it would read rendered. Fenced code is
    kept as written (a `# comment` in it is no heading), without its fences; with `mark_code`,
    each block's lines between CODE_START and CODE_END."""
    from core.markdown import fence_kinds

    if mark_code:  # the marks are ours alone: none may come from a document
        text = text.replace(CODE_START, "").replace(CODE_END, "")
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []

    def flush_prose() -> None:
        if prose:
            part = "\n".join(prose)
            for pattern, replacement in _MD_MARKUP:
                part = pattern.sub(replacement, part)
            out.extend(part.split("\n"))
            prose.clear()

    def flush_code() -> None:
        if code:
            if mark_code:
                code[0] = CODE_START + code[0]
                code[-1] += CODE_END
            out.extend(code)
            code.clear()

    for line, kind in zip(lines, fence_kinds(lines), strict=True):
        if kind == "code":
            code.append(line)
        elif kind == "fence":
            flush_prose()
            flush_code()
        else:
            flush_code()
            prose.append(line)
    flush_prose()
    flush_code()
    return "\n".join(out)


def one_line(text: str) -> str:
    """Chat Markdown as one line of plain text, for a table cell that does not render it."""
    return " ".join(_QUOTE_MARK.sub("", plain_markdown(text)).split())


# The chat log's rating filter, in words, with the values the services and the CLI take.
FEEDBACK_CHOICES = (
    ("every answer", "all"),
    ("rated", "any"),
    ("rated up", "up"),
    ("rated down", "down"),
    ("unrated", "none"),
)
