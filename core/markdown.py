"""Fenced code in Markdown, found as CommonMark finds it: ingest keeps what is inside as written,
and the app shows it as code. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

# Any indentation: a fence inside a list item is indented by the item's own (the chunker and the
# answerer read fences the same way).
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
LineKind = Literal["text", "fence", "code"]


def fence_kinds(lines: Sequence[str]) -> list[LineKind]:
    """For each line: a fence (opening or closing), code inside one, or text. A fence closes
    only with the same character, at least as many of them and nothing after, so a ``` line
    inside a ~~~ block is code, not a close. An unclosed fence runs to the end."""
    kinds: list[LineKind] = []
    opened = ""
    for line in lines:
        match = FENCE.match(line)
        if not opened:
            # A backtick fence's info string holds no backtick (```ls``` is inline code).
            if match and match.group(1)[0] == "`" and "`" in line[match.end() :]:
                match = None
            kinds.append("fence" if match else "text")
            opened = match.group(1) if match else ""
            continue
        fence = match.group(1) if match else ""
        if (
            match is not None
            and fence[0] == opened[0]
            and len(fence) >= len(opened)
            and not line[match.end() :].strip()
        ):
            kinds.append("fence")
            opened = ""
        else:
            kinds.append("code")
    return kinds


def fenced_lines(lines: Sequence[str]) -> list[bool]:
    """For each line, whether it belongs to fenced code (its fences included)."""
    return [kind != "text" for kind in fence_kinds(lines)]


def open_fence(lines: Sequence[str]) -> str:
    """The fence (its characters, "```" or "~~~~") of the code block still open after `lines`,
    or "" when none is: what a reader of text cut there must reopen it with."""
    opened = ""
    for line, kind in zip(lines, fence_kinds(lines), strict=True):
        if kind == "fence":
            match = FENCE.match(line)
            opened = "" if opened else match.group(1)  # type: ignore[union-attr]
    return opened


def code_blocks(text: str) -> list[tuple[str, bool]]:
    """`text` in document order as runs of prose and the contents of fenced code blocks (fence
    lines dropped), each with whether it is code. An unclosed block runs to the end."""
    runs: list[tuple[str, bool]] = []
    lines = text.split("\n")
    current: list[str] = []
    code = False
    for line, kind in zip(lines, fence_kinds(lines), strict=True):
        if kind == "fence":
            runs.append(("\n".join(current), code))
            current, code = [], not code
        else:
            current.append(line)
    runs.append(("\n".join(current), code))
    return [(run, is_code) for run, is_code in runs if run or not is_code]
