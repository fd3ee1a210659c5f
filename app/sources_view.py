"""The sources panel as HTML: one card per cited passage (file name, page, heading path, a relevance
bar with a plain label, the quoted sentences highlighted inside the passage). All document text is
escaped here, so nothing from a document is ever rendered as markup. Pure functions."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from app.markup import CODE_END, CODE_START, plain_markdown

if TYPE_CHECKING:
    from core.records import SourceRef

EMPTY = '<p class="src-empty">Ask a question to see its sources.</p>'
NONE = '<p class="src-empty">No sources for this answer.</p>'
# Characters of passage shown around the quoted sentences (the whole passage is one click away).
CONTEXT_CHARS = 220
EXCERPT_CHARS = 480

# Cosine similarity of all-MiniLM-style embeddings, as people read it: the right passage for a
# plainly worded question usually scores 0.35-0.7; under 0.2 it rarely is the right one.
RELEVANCE_LEVELS: tuple[tuple[float, str], ...] = (
    (0.5, "strong match"),
    (0.35, "good match"),
    (0.2, "partial match"),
    (float("-inf"), "weak match"),
)
FULL_BAR_SCORE = 0.7
LEAD_WORDS = 6

SOURCES_CSS = """
.src-list { display: flex; flex-direction: column; gap: 10px; }
.src-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 12px;
  background: var(--block-background-fill); overflow-wrap: break-word; word-break: normal;
  hyphens: none; min-width: 0; }
.src-head { display: flex; flex-wrap: wrap; gap: 4px 8px; align-items: baseline; }
.src-num { font-weight: 600; color: var(--body-text-color-subdued); }
.src-file { font-weight: 600; }
.src-page, .src-path { color: var(--body-text-color-subdued); font-size: 0.9em; }
.src-path { margin-top: 2px; }
.src-rel { display: flex; align-items: center; gap: 8px; margin: 6px 0; font-size: 0.85em; }
.src-bar { flex: 0 0 90px; height: 6px; border-radius: 3px; background: var(--border-color-primary);
  overflow: hidden; }
.src-bar > div { height: 100%; background: var(--color-accent); }
.src-text { white-space: pre-wrap; font-size: 0.92em; line-height: 1.45; }
/* The whole passage, once opened, takes the excerpt's place instead of repeating it. */
.src-card:has(details[open]) > .src-excerpt { display: none; }
.src-code { display: block; font-family: var(--font-mono, monospace); font-size: 0.95em;
  white-space: pre-wrap; overflow-wrap: anywhere; background: var(--background-fill-secondary);
  border-radius: 4px; padding: 4px 6px; margin: 2px 0; }
.src-text mark { background: #fde68a; color: inherit; border-radius: 2px; padding: 0 1px; }
.src-card details { margin-top: 6px; font-size: 0.9em; }
.src-card summary { cursor: pointer; color: var(--body-text-color-subdued); }
.src-empty { color: var(--body-text-color-subdued); }
"""


def relevance_label(score: float) -> str:
    """A plain word for a cosine similarity score ("strong match" ... "weak match"); decided on
    the two decimals shown beside it, so the word and the number never disagree."""
    shown = round(score, 2)
    return next(label for floor, label in RELEVANCE_LEVELS if shown >= floor)


def relevance_width(score: float) -> int:
    """The bar's filled share in percent (a score of FULL_BAR_SCORE or more fills it)."""
    return max(3, min(100, round(100 * score / FULL_BAR_SCORE)))


# Between two quoted words: space, or a list item's or a block quote's marker.
_BETWEEN = r"\s+(?:(?:[-*+•>]|\d+[.)])\s+)?"


def quote_spans(text: str, quotes: list[str]) -> list[tuple[int, int]]:
    """Where each quoted sentence sits in `text` (whitespace may differ), merged, in order."""
    spans: list[tuple[int, int]] = []
    for quote in quotes:
        words = quote.split()
        if not words:
            continue
        # A quote may run across list items, whose markers the answerer does not quote.
        match = re.search(_BETWEEN.join(re.escape(w) for w in words), text)
        if match:
            spans.append(match.span())
        elif len(words) > LEAD_WORDS:
            # Quoted with a small difference (a list marker, a joined line): found by its first
            # words, marked for about its length.
            lead = re.search(_BETWEEN.join(re.escape(w) for w in words[:LEAD_WORDS]), text)
            if lead:
                spans.append((lead.start(), min(len(text), lead.start() + len(" ".join(words)))))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _marked(text: str, spans: list[tuple[int, int]], lo: int, hi: int) -> str:
    """text[lo:hi] escaped, with the parts inside `spans` wrapped in <mark>."""
    out, pos = [], lo
    for start, end in spans:
        start, end = max(start, lo), min(end, hi)
        if start >= end:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        pos = end
    out.append(html.escape(text[pos:hi]))
    return "".join(out)


def _word_edge(text: str, i: int, forward: bool) -> int:
    """Move `i` to the nearest whitespace so an excerpt never starts or ends mid-word."""
    if i <= 0 or i >= len(text):
        return max(0, min(i, len(text)))
    step = 1 if forward else -1
    j = i
    while 0 < j < len(text) and not text[j].isspace():
        j += step
    return j


def excerpt_bounds(text: str, spans: list[tuple[int, int]]) -> tuple[int, int]:
    """The stretch of `text` worth showing: the quoted sentences with some context around them,
    or the beginning when nothing was quoted; cut at word boundaries."""
    if len(text) <= EXCERPT_CHARS + 2 * CONTEXT_CHARS:
        return 0, len(text)
    if not spans:
        return 0, _word_edge(text, EXCERPT_CHARS, forward=False) or EXCERPT_CHARS
    lo = _word_edge(text, spans[0][0] - CONTEXT_CHARS, forward=True)
    hi = _word_edge(text, spans[-1][1] + CONTEXT_CHARS, forward=False)
    return lo, max(hi, spans[-1][1])


_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)])\s")
SHORT_LINE = 50


def display_text(text: str) -> str:
    """The passage as it reads: lines a file wrapped at a fixed width are joined, while
    paragraphs, list items, short lines (headings) and code (between CODE_START and CODE_END)
    keep their own lines."""
    out: list[str] = []
    in_code = False
    for line in text.strip().splitlines():
        prev = out[-1] if out else ""
        code = in_code or CODE_START in line
        in_code = code and CODE_END not in line
        joins = (
            not code
            and prev.strip()
            and line.strip()
            and len(prev) >= SHORT_LINE
            and not prev.endswith(CODE_END)
            and not _LIST_ITEM.match(line)
        )
        if joins:
            out[-1] = f"{prev.rstrip()} {line.strip()}"
        else:
            out.append(line if code else line.rstrip())
    return "\n".join(out)


def _around_marks(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`spans` split where a code mark falls inside one, so a highlight never straddles the edge
    of a code element (the tags would nest wrongly)."""
    out = []
    for start, end in spans:
        for i in range(start, end):
            if text[i] in (CODE_START, CODE_END):
                if i > start:
                    out.append((start, i))
                start = i + 1
        if end > start:
            out.append((start, end))
    return out


def _code_tags(text: str, fragment: str, lo: int) -> str:
    """`fragment` (escaped, from `text[lo:]`) with its code marks as code elements; one cut
    inside a block opens or closes it at its edge."""
    if text.rfind(CODE_START, 0, lo) > text.rfind(CODE_END, 0, lo):  # starts inside code
        fragment = CODE_START + fragment
    if fragment.rfind(CODE_START) > fragment.rfind(CODE_END):
        fragment += CODE_END
    # A code element is a block of its own: the line breaks around it would add empty lines.
    fragment = fragment.replace("\n" + CODE_START, CODE_START).replace(CODE_END + "\n", CODE_END)
    return fragment.replace(CODE_START, '<code class="src-code">').replace(CODE_END, "</code>")


def _card(number: int, source: SourceRef) -> str:
    text = display_text(plain_markdown(source.text, mark_code=True))
    # A quoted code block is its code as written; a quoted sentence reads without its markup.
    quotes = [*source.quotes, *(plain_markdown(q) for q in source.quotes)]
    spans = _around_marks(text, quote_spans(text, quotes))
    lo, hi = excerpt_bounds(text, spans)
    body = ("… " if lo > 0 else "") + _code_tags(text, _marked(text, spans, lo, hi).strip(), lo)
    body += " …" if hi < len(text) else ""
    name = source.file_name or source.source.rsplit("/", 1)[-1] or source.source
    head = [
        f'<span class="src-num">[{number}]</span>',
        f'<span class="src-file">{html.escape(name)}</span>',
    ]
    if source.page is not None:
        head.append(f'<span class="src-page">page {source.page}</span>')
    parts = [
        f'<div class="src-card" data-source="{number}">',
        f'<div class="src-head">{"".join(head)}</div>',
    ]
    if source.heading_path:
        crumbs = " › ".join(html.escape(p.strip()) for p in source.heading_path.split(">"))
        parts.append(f'<div class="src-path">{crumbs}</div>')
    # A cosine can fall just below 0 for a passage found by its keywords alone: shown on the
    # 0 to 1 scale the guide and the tooltip give, as 0.
    score = max(0.0, source.score)
    label = relevance_label(score)
    why = f"similarity to the question: {score:.2f} (0 to 1)"
    if source.rare_words and label in ("weak match", "partial match"):
        # Found by a word few passages hold (a name, an option): what it matched is that word.
        label, why = "keyword match", f"holds a rare word of the question; {why}"
    parts.append(
        f'<div class="src-rel" title="{why}">'
        f'<div class="src-bar"><div style="width:{relevance_width(score)}%"></div></div>'
        f"<span>{label} · {score:.2f}</span></div>"
    )
    parts.append(f'<div class="src-text src-excerpt">{body}</div>')
    if (lo, hi) != (0, len(text)):
        parts.append(
            "<details><summary>Whole passage</summary>"
            f'<div class="src-text">{_code_tags(text, _marked(text, spans, 0, len(text)), 0)}</div>'
            "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


def sources_html(sources: list[SourceRef]) -> str:
    """The sources panel for one answer; cards numbered as the answer cites them."""
    if not sources:
        return NONE
    cards = "".join(_card(i, s) for i, s in enumerate(sources, start=1))
    return f'<div class="src-list">{cards}</div>'
