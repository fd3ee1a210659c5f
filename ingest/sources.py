"""What an ingest run reads: files found under paths (recursive, glob filters) and rows of a
Hugging Face `datasets` source. Each becomes a SourceDoc with a stable key and a content hash."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.datasource import dataset_name, load_rows
from core.errors import SourceError
from ingest.loaders import (
    ALL_FIELDS,
    LOADERS,
    RecordFields,
    Section,
    load_sections,
    record_sections,
)

FILE_PREFIX = "file:"
DATASET_PREFIX = "dataset:"


@dataclass
class SourceDoc:
    """One unit of ingest: replaced as a whole when its content hash changes."""

    key: str
    name: str
    fingerprint: str
    load: Callable[[], list[Section]]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceFailure:
    """A source that could not even be listed or hashed (missing path, unreadable file)."""

    name: str
    reason: str


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(str(path), p) for p in patterns)


def _walk(root: Path) -> Iterator[Path]:
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue  # hidden files and folders (.git, .DS_Store) are never documents
        if child.is_dir():
            yield from _walk(child)
        elif child.is_file():
            yield child


def file_key(path: Path) -> str:
    return FILE_PREFIX + str(path.resolve())


def _file_source(path: Path, fields: RecordFields) -> SourceDoc:
    data = path.read_bytes()
    resolved = path.resolve()
    return SourceDoc(
        key=file_key(path),
        name=str(path),
        fingerprint=hashlib.sha256(data).hexdigest(),
        load=lambda: load_sections(resolved, resolved.read_bytes(), fields),
        metadata={"source": str(resolved), "file_name": path.name},
    )


def file_sources(
    paths: Sequence[Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    fields: RecordFields = ALL_FIELDS,
) -> Iterator[SourceDoc | SourceFailure]:
    """Files named or found under `paths`. Walked folders yield only supported types matching
    `include` (all supported types when empty) and not `exclude`; a file named explicitly is always
    tried, so an unsupported one is reported rather than silently skipped."""
    for root in paths:
        if not root.exists():
            yield SourceFailure(str(root), "no such file or directory")
            continue
        if root.is_file():
            candidates, explicit = [root], True
        else:
            candidates, explicit = list(_walk(root)), False
        for path in candidates:
            if not explicit:
                if path.suffix.lower() not in LOADERS:
                    continue
                if include and not _matches(path, include):
                    continue
            if exclude and _matches(path, exclude):
                continue
            try:
                yield _file_source(path, fields)
            except OSError as exc:
                yield SourceFailure(str(path), f"cannot read: {exc.strerror or exc}")


def dataset_sources(
    spec: str, split: str | None, fields: RecordFields, config: str | None = None
) -> Iterator[SourceDoc]:
    """Rows of a `datasets` source, one SourceDoc each, so a changed row re-embeds alone.

    `spec` is a hub name (needs internet) or a local .json/.jsonl/.csv/.parquet file."""
    table = load_rows(spec, split, config, (fields.text_field,))
    name = dataset_name(spec)
    split_name = split or "train"
    for row, record in enumerate(table):
        error: SourceError | None = None
        try:
            sections = record_sections([(row, record)], fields)
        except SourceError as exc:
            sections, error = [], exc
        payload = json.dumps([[s.text, s.metadata] for s in sections], sort_keys=True, default=str)
        yield SourceDoc(
            key=f"{DATASET_PREFIX}{name}[{split_name}]#{row}",
            name=f"{spec}[{split_name}] row {row}",
            fingerprint=hashlib.sha256(payload.encode()).hexdigest(),
            load=_fixed(sections, error),
            metadata={"source": f"{name}[{split_name}]", "dataset": name},
        )


def _fixed(sections: list[Section], error: SourceError | None) -> Callable[[], list[Section]]:
    def load() -> list[Section]:
        if error is not None:
            raise error
        return sections

    return load
