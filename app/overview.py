"""The chat's first screen: what is indexed (how many documents, a few names) and three suggested
questions drawn from the indexed documents' headings. Pure functions over ingest's document list."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.wording import counted

if TYPE_CHECKING:
    from ingest.documents import DocumentInfo

NAMES_SHOWN = 4
SUGGESTIONS = 3
# Headings that name a part of any document rather than a topic: no question in them.
GENERIC_HEADINGS = frozenset(
    {
        "abstract", "appendix", "contents", "table of contents", "introduction", "overview",
        "summary", "conclusion", "conclusions", "references", "bibliography", "index", "notes",
        "preface", "foreword", "acknowledgements", "acknowledgments", "glossary", "see also",
        "further reading", "about", "license", "changelog",
        # the sections of a reference page (man pages, command and API references)
        "synopsis", "description", "options", "parameters", "arguments", "examples", "example",
        "outputs", "output", "return value", "returns", "errors", "diagnostics", "environment",
        "files", "compatibility", "history", "bugs", "author", "authors", "usage", "details",
    }
)  # fmt: skip
_QUESTION_START = re.compile(r"^(how|what|why|which|who|can|do|does|is|are|should)\b", re.I)
_HOW_TO = re.compile(r"^how to\s+", re.I)
# A heading opening with one of these is a clause ("From the web app", "When the documents do
# not cover a question"): no question reads well around it.
_CLAUSE_START = re.compile(
    r"^(from|with|without|in|on|for|by|to|via|using|into|after|before|when|where|if|while|"
    r"during|about|and|or|but|under|over|at)\b",
    re.I,
)
# A section number before a heading's words: "5.6.5. ", "F.32.1. ", "A. ".
_SECTION_NUMBER = re.compile(r"^(?:[A-Z]|\d+)(?:\.\d+)*\.\s+")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&~])")


def escape_markdown(text: str) -> str:
    """Text shown literally inside Markdown (no markup, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _topic(heading: str) -> str:
    """A heading as it reads mid-sentence: 'Exporting the log' -> 'exporting the log', while
    names and acronyms ('PDF files', 'Chroma') and headings in title case ('Processing and
    Creating JSON Data') keep their capitals."""
    first, _, rest = heading.partition(" ")
    title_case = any(w[:1].isupper() and w[1:].islower() for w in rest.split())
    if len(first) > 1 and first[1:].islower() and first[0].isupper() and rest and not title_case:
        first = first.lower()
    return f"{first} {rest}".strip()


def question_for(heading: str) -> str | None:
    """A question a heading invites, or None for a generic or unusable heading."""
    heading = " ".join(heading.replace("\u00a0", " ").split()).strip(" :.-–—")
    heading = _SECTION_NUMBER.sub("", heading)  # "9.16.1. Processing JSON" -> "Processing JSON"
    words = heading.split()
    if not words or len(heading) > 80 or not any(c.isalpha() for c in heading):
        return None
    if heading.lower() in GENERIC_HEADINGS or re.fullmatch(r"[\d.\sIVXivx]+", heading):
        return None
    if heading.endswith("?"):
        return heading
    if _HOW_TO.match(heading):
        return "How do I " + _HOW_TO.sub("", heading) + "?"
    if _QUESTION_START.match(heading):
        return heading + "?"
    if _CLAUSE_START.match(heading):
        return None
    return f"What do the documents say about {_topic(heading)}?"


def newest_first(docs: list[DocumentInfo]) -> list[DocumentInfo]:
    """Documents by when they were indexed, the latest first (undated ones last, in order)."""
    dated = sorted((d for d in docs if d.indexed_at), key=lambda d: d.indexed_at, reverse=True)
    return dated + [d for d in docs if not d.indexed_at]


def suggestion_candidates(docs: list[DocumentInfo]) -> list[tuple[str, str]]:
    """(question, the document it comes from) for every usable section heading, one per document
    in turn while documents last, each document's sections in order (below its title). The
    documents added last come first: what a user just uploaded is what they came to ask about,
    not the guide that was there before it."""
    per_doc: list[list[tuple[str, str]]] = []
    for doc in newest_first(docs):
        questions: list[tuple[str, str]] = []
        for path in doc.headings:
            parts = [p.strip() for p in path.split(">") if p.strip()]
            if len(parts) < 2:  # the document title alone: too broad to ask about
                continue
            q = question_for(parts[-1])
            if q and q not in (asked for asked, _ in questions):
                questions.append((q, doc.source))
        if questions:
            per_doc.append(questions)
    out: list[tuple[str, str]] = []
    depth = 0
    while any(depth < len(qs) for qs in per_doc):
        for qs in per_doc:
            if depth < len(qs) and qs[depth][0] not in (q for q, _ in out):
                out.append(qs[depth])
        depth += 1
    return out


def suggest_questions(
    docs: list[DocumentInfo],
    n: int = SUGGESTIONS,
    answerable: Callable[[str, str], bool] | None = None,
    tries: int = 12,
) -> list[str]:
    """Up to `n` questions from section headings (see suggestion_candidates); with `answerable`
    (question, document), only those the app answers well from that document, trying at most
    `tries` of them."""
    chosen: list[str] = []
    for question, source in suggestion_candidates(docs)[: tries if answerable else None]:
        if answerable is None or answerable(question, source):
            chosen.append(question)
            if len(chosen) == n:
                break
    return chosen


def overview_markdown(docs: list[DocumentInfo]) -> str:
    """One line on what is indexed, for the empty chat."""
    if not docs:
        return (
            "**Nothing is indexed yet.** Add documents in the Documents tab "
            "(or with `python -m ingest PATH`), then ask about them."
        )
    names = ", ".join(escape_markdown(d.name) for d in newest_first(docs)[:NAMES_SHOWN])
    more = len(docs) - NAMES_SHOWN
    tail = f" and {more} more" if more > 0 else ""
    return (
        f"**{counted(len(docs), 'document')} indexed:** {names}{tail}.\n\n"
        "Ask a question, or try one of these:"
    )
