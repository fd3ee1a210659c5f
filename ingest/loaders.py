"""Turning one file into text sections (a page of a PDF, a record of a CSV/JSONL, a whole
text file), with the metadata each chunk inherits. Anything unreadable raises SourceError."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import SourceError


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


def _load_text(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    return [Section(_decode(data), {"title": path.stem})]


_MD_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _load_markdown(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    text = _decode(data)
    heading = _MD_HEADING.search(text)
    return [Section(text, {"title": heading.group(1) if heading else path.stem})]


def _load_pdf(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    if not data.strip():
        raise SourceError("empty file")
    try:
        reader = PdfReader(io.BytesIO(data))
        title = None
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title)
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if text.strip():
                sections.append(Section(text, {"page": number, "title": title or path.stem}))
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"corrupt or unreadable PDF ({exc})") from exc
    if not sections:
        raise SourceError("PDF has no extractable text (scanned images?)")
    return sections


def _load_html(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else path.stem
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    text = soup.get_text("\n", strip=True)
    if not text:
        raise SourceError("HTML page has no visible text")
    return [Section(text, {"title": title})]


def _load_docx(path: Path, data: bytes, fields: RecordFields) -> list[Section]:
    import zipfile

    import docx

    if not data.strip():
        raise SourceError("empty file")
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SourceError(f"corrupt or unreadable DOCX ({exc})") from exc
    text = "\n".join(p.text for p in document.paragraphs if p.text.strip())
    if not text:
        raise SourceError("DOCX has no text")
    title = document.core_properties.title or path.stem
    return [Section(text, {"title": title})]


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
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"line {number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise SourceError(f"line {number} is not a JSON object")
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
