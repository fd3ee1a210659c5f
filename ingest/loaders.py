"""Turning one file into text sections (a page of a PDF, a record of a CSV/JSONL, a whole
text file), with the metadata each chunk inherits. Anything unreadable raises SourceError."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.datasource import json_lines
from core.errors import SourceError
from core.index.chunks import Meta
from core.index.rows import labelled_row
from core.logs import quiet
from core.markdown import FENCE, fenced_lines


@dataclass
class Section:
    """A stretch of text with its own metadata (page number, record fields, title)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordFields:
    """Which record fields hold the text and which become metadata (CSV, JSONL, datasets)."""

    text_field: str | None = None
    metadata_fields: Sequence[str] = ()


ALL_FIELDS = RecordFields()


def _decode(data: bytes) -> str:
    if not data.strip():
        raise SourceError("empty file")
    if b"\x00" in data[:8192]:
        raise SourceError("binary content, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
    if not text.strip():
        raise SourceError("empty file")
    return text


def heading_path(*parts: str | None) -> str:
    """`Title > Section > Subsection`, skipping empty parts and a heading that repeats the one
    before it (a page whose first heading is its title)."""
    kept: list[str] = []
    for part in parts:
        part = " ".join((part or "").split())
        if part and (not kept or kept[-1].casefold() != part.casefold()):
            kept.append(part)
    return " > ".join(kept)


def structured_section(text: str, title: str, path: Sequence[str] = (), **extra: Any) -> Section:
    """A section of a structured document: its title and heading path travel with every chunk,
    are embedded with it, and are shown as the citation."""
    meta: dict[str, Any] = {Meta.TITLE: title, Meta.HEADING_PATH: heading_path(title, *path)}
    if path:
        meta[Meta.SECTION] = path[-1]
    meta.update(extra)
    return Section(text, meta)


def _load_text(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    return [structured_section(_decode(data), path.stem)]


_MD_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _md_cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def markdown_tables(body: str) -> str:
    """Markdown tables with each row on a paragraph of its own that keeps the column headers
    (see core.index.rows); everything else, fenced code included, as it is."""
    lines, out, i = body.split("\n"), [], 0
    code = fenced_lines(lines)
    while i < len(lines):
        if (
            i + 1 < len(lines)
            and not code[i + 1]
            and "|" in lines[i]
            and _MD_RULE.match(lines[i + 1])
        ):
            headers, i = _md_cells(lines[i]), i + 2
            while i < len(lines) and not code[i] and "|" in lines[i] and lines[i].strip():
                out += [labelled_row(headers, _md_cells(lines[i])), ""]
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


_MD_DEFINITION = re.compile(r"^ {0,3}:[ \t]+(\S.*)$")
# A list item, a quote, a table row, a heading or a fence is not a term.
_MD_NOT_TERM = re.compile(r"^\s*(?:[-*+]\s|[>|#]|\d+[.)]\s|```|~~~|:\s)")


def _definition_terms(out: list[str]) -> int | None:
    """Where the term lines of a definition about to start begin in `out` (the lines of the
    paragraph just above it, one blank line between allowed), or None when none is there."""
    end = len(out)
    if end >= 2 and not out[-1].strip() and out[-2].strip():
        end -= 1
    start = end
    while start > 0 and out[start - 1].strip():
        start -= 1
    terms = out[start:end]
    if not terms or any(_MD_NOT_TERM.match(t) or len(t.strip()) > 120 for t in terms):
        return None
    return start


def markdown_definitions(body: str) -> str:
    """Definition lists (the `Term` line, then `: definition` lines, as Pandoc and Markdown
    Extra write them) with each definition on a paragraph of its own that carries its term(s):
    "Term, Alias: definition", as an HTML definition list's items are read. Lines inside fenced
    code are left as they are."""
    lines, out, i = body.split("\n"), [], 0
    code = fenced_lines(lines)
    while i < len(lines):
        line = lines[i]
        match = None if code[i] else _MD_DEFINITION.match(line)
        start = _definition_terms(out) if match else None
        if match is None or start is None:
            out.append(line)
            i += 1
            continue
        terms = ", ".join(dict.fromkeys(t.strip() for t in out[start:] if t.strip()))
        definitions, i = [[match.group(1).strip()]], i + 1
        while i < len(lines):
            nxt = lines[i]
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if (more := _MD_DEFINITION.match(nxt)) is not None:  # one more definition of it
                definitions.append([more.group(1).strip()])
            elif not nxt.strip() and _MD_DEFINITION.match(following):
                pass  # a blank line between two definitions of the same term
            elif nxt.strip() and not _MD_DEFINITION.match(following) and not FENCE.match(nxt):
                definitions[-1].append(nxt.strip())  # the definition goes on (indented or not)
            else:  # a blank line, or the next term
                break
            i += 1
        del out[start:]
        for definition in definitions:
            out += [f"{terms}: {' '.join(definition)}", ""]
    return "\n".join(out)


def markdown_sections(text: str, fallback_title: str) -> list[Section]:
    """Sections under each ATX heading (`#`...), headings inside fenced code ignored; the first
    level-1 heading is the document title."""
    parts: list[tuple[list[str], list[str]]] = [([], [])]
    stack: list[tuple[int, str]] = []
    title: str | None = None
    lines = text.splitlines()
    for line, code in zip(lines, fenced_lines(lines), strict=True):
        match = None if code else _MD_ATX.match(line)
        if match is None:
            parts[-1][1].append(line)
            continue
        level, heading = len(match.group(1)), match.group(2).strip()
        if level == 1 and title is None:
            title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        parts.append(([h for _, h in stack], []))
    title = title or fallback_title
    sections = []
    for path, lines in parts:
        body = markdown_definitions(markdown_tables("\n".join(lines))).strip()
        if body:
            sections.append(structured_section(body, title, path))
    return sections


def _load_markdown(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    sections = markdown_sections(_decode(data), path.stem)
    if not sections:
        raise SourceError("Markdown file has only headings, no text")
    return sections


def _pdf_outline(reader) -> list[tuple[int, list[str]]]:
    """(first page index, heading path) of each outline entry, in page order."""
    entries: list[tuple[int, list[str]]] = []

    def walk(items, trail: list[str]) -> None:
        last: list[str] = trail
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a dangling outline entry: keep the rest
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if page is None or page < 0 or not title:
                continue
            last = [*trail, title]
            entries.append((page, last))

    try:
        walk(reader.outline, [])
    except Exception:  # malformed outlines are common; pages still load without one
        return []
    return sorted(entries, key=lambda e: e[0])


def _load_pdf(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    if not data.strip():
        raise SourceError("empty file")
    # pypdf warns of what is wrong with a file before it fails; the refusal below says it.
    with quiet("pypdf", logging.ERROR):
        try:
            reader = PdfReader(io.BytesIO(data))
            title = None
            if reader.metadata is not None and reader.metadata.title:
                title = str(reader.metadata.title)
            outline = _pdf_outline(reader)
            sections = []
            trail: list[str] = []
            texts = strip_page_furniture([page.extract_text() or "" for page in reader.pages])
            for index, text in enumerate(texts):
                while outline and outline[0][0] <= index:
                    trail = outline.pop(0)[1]
                if text.strip():
                    name = title or path.stem
                    sections.append(structured_section(text, name, trail, page=index + 1))
        except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"corrupt or unreadable PDF ({exc})") from exc
    if not sections:
        raise SourceError("PDF has no extractable text (scanned images?)")
    return sections


def _load_html(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    from ingest.html import html_sections

    page_title, parts = html_sections(_decode(data))
    title = page_title or path.stem
    sections = [
        structured_section(part.text, title, part.path) for part in parts if part.text.strip()
    ]
    if not sections:
        # A page of links only (an index): its headings still say what it is about.
        headings = [heading_path(*part.path) for part in parts if part.path]
        if not headings:
            raise SourceError("HTML page has no main text (only navigation or markup)")
        sections = [structured_section("\n".join(headings), title)]
    return sections


def _load_docx(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    import zipfile

    import docx

    if not data.strip():
        raise SourceError("empty file")
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SourceError(f"corrupt or unreadable DOCX ({exc})") from exc
    title = document.core_properties.title or path.stem
    parts: list[tuple[list[str], list[str]]] = [([], [])]
    stack: list[tuple[int, str]] = []
    for para in _docx_blocks(document):
        if isinstance(para, list):  # a table: its rows, each keeping the column headers
            parts[-1][1].extend(para)
            continue
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        level = None
        if style == "Title":
            level = 0
        elif style.startswith("Heading"):
            digits = style.removeprefix("Heading").strip()
            level = int(digits) if digits.isdigit() else 1
        if level is None:
            parts[-1][1].append(text)
            continue
        if level == 0:
            title = text
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        parts.append(([h for _, h in stack], []))
    # A paragraph, or a table row, a paragraph of the text: the splitter and the answerer see
    # where each ends, as in the other formats (one line break would run rows into one sentence).
    sections = [
        structured_section("\n\n".join(lines), title, trail) for trail, lines in parts if lines
    ]
    if not sections:
        raise SourceError("DOCX has no text")
    return sections


def _docx_blocks(document) -> list[Any]:
    """The body in document order: paragraphs, and each table as its rows' lines."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    blocks: list[Any] = []
    for child in document.element.body.iterchildren():
        if child.tag == qn("w:p"):
            blocks.append(Paragraph(child, document))
        elif child.tag == qn("w:tbl"):
            rows = [[cell.text for cell in row.cells] for row in Table(child, document).rows]
            if rows:
                headers, body = rows[0], rows[1:]
                lines = [labelled_row(headers, r) for r in body] if body else [" | ".join(headers)]
                blocks.append([line for line in lines if line])
    return blocks


_PAGE_NUMBER = re.compile(r"^\s*(page\s+)?\d{1,4}(\s*(of|/)\s*\d{1,4})?\s*$", re.IGNORECASE)


def _line_key(line: str) -> str:
    """A line as running headers repeat it: spacing, case and numbers (page numbers) aside."""
    return re.sub(r"\d+", "#", " ".join(line.split()).casefold())


def _running_lines(pages: list[list[str]]) -> tuple[set[str], set[str]]:
    """The lines that run at the top and at the bottom of most pages (a running header or footer:
    the same words, page numbers aside, on half the pages or more, three at least)."""
    key = _line_key
    heads: dict[str, int] = {}
    feet: dict[str, int] = {}
    for lines in pages:
        for line in lines[:2]:
            heads[key(line)] = heads.get(key(line), 0) + 1
        for line in lines[-2:]:
            feet[key(line)] = feet.get(key(line), 0) + 1
    least = max(3, len(pages) // 2)
    return (
        {k for k, n in heads.items() if n >= least and k},
        {k for k, n in feet.items() if n >= least and k},
    )


def strip_page_furniture(texts: list[str]) -> list[str]:
    """Each page's text without its running header and footer and its page number, which
    would otherwise be glued to the first and last sentences of every page."""
    pages = [[line for line in text.splitlines() if line.strip()] for text in texts]
    heads, feet = _running_lines(pages) if len(pages) >= 3 else (set(), set())
    key = _line_key
    out = []
    for lines in pages:
        top, bottom = 0, len(lines)
        while top < min(2, bottom) and (key(lines[top]) in heads or _PAGE_NUMBER.match(lines[top])):
            top += 1
        while bottom > max(top, len(lines) - 2) and (
            key(lines[bottom - 1]) in feet or _PAGE_NUMBER.match(lines[bottom - 1])
        ):
            bottom -= 1
        out.append("\n".join(lines[top:bottom]))
    return out


def record_sections(
    records: list[tuple[int, dict[str, Any]]], fields: RecordFields
) -> list[Section]:
    """One section per record: the text field (or every field as `key: value` lines when none is
    chosen) and the chosen metadata fields; `row` keeps the record's position."""
    sections = []
    for row, record in records:
        if fields.text_field is not None:
            if fields.text_field not in record:
                raise SourceError(
                    f"record {row} has no field {fields.text_field!r} "
                    f"(fields: {', '.join(map(str, record))})"
                )
            text = "" if record[fields.text_field] is None else str(record[fields.text_field])
        else:
            text = "\n".join(f"{k}: {v}" for k, v in record.items() if v not in (None, ""))
        if not text.strip():
            continue  # a record with an empty text field carries nothing to retrieve
        metadata: dict[str, Any] = {"row": row}
        for key in fields.metadata_fields:
            value = record.get(key)
            if value is not None:
                metadata[key] = value if isinstance(value, (int, float, bool)) else str(value)
        sections.append(Section(text, metadata))
    if not sections:
        raise SourceError("no records with text")
    return sections


def _load_csv(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    text = _decode(data)
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise SourceError(f"malformed CSV ({exc})") from exc
    return record_sections(list(enumerate(rows)), fields)


def _load_jsonl(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    text = _decode(data)
    records = []
    for number, record, problem in json_lines(text):
        if problem:
            raise SourceError(f"line {number}: {problem}")
        records.append((number - 1, record))
    return record_sections(records, fields)


LOADERS: dict[str, Callable[[Path, bytes, RecordFields], list[Section]]] = {
    ".txt": _load_text,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".pdf": _load_pdf,
    ".html": _load_html,
    ".htm": _load_html,
    ".docx": _load_docx,
    ".csv": _load_csv,
    ".jsonl": _load_jsonl,
}


def load_sections(path: Path, data: bytes, fields: RecordFields = ALL_FIELDS) -> list[Section]:
    """Sections of one file, chosen by its suffix; raises SourceError on anything unreadable."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise SourceError(
            f"unsupported file type {path.suffix or '(none)'}; supported: "
            f"{', '.join(sorted(LOADERS))}"
        )
    return loader(path, data, fields)
