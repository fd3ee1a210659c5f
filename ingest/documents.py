"""The indexed documents as a list (name, chunks, pages, headings, when indexed), and removing one:
its chunks leave Chroma first, then the lexical index is rebuilt from Chroma, then its stored
upload goes; a run killed between the steps leaves an index the next read repairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SourceError
from core.index.chunks import Meta, iter_pages

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

log = logging.getLogger(__name__)


@dataclass
class DocumentInfo:
    """One indexed document: a file, or a whole dataset split (its rows are indexed one by one)."""

    source: str  # the `source` metadata every chunk of the document carries; the delete key
    name: str
    chunks: int = 0
    pages: set[int] = field(default_factory=set)
    headings: list[str] = field(default_factory=list)  # heading paths in chunk order, no repeats
    indexed_at: str | None = None  # ISO time of the newest chunk write; None before it was kept
    rows: int = 0  # dataset rows (0 for files)

    @property
    def page_count(self) -> int | None:
        return len(self.pages) or None


def _name(meta: dict[str, Any]) -> str:
    if meta.get(Meta.FILE_NAME):
        return str(meta[Meta.FILE_NAME])
    source = str(meta.get(Meta.SOURCE) or meta.get(Meta.SOURCE_KEY) or "?")
    return source.rsplit("/", 1)[-1]


def list_documents(collection: Collection) -> list[DocumentInfo]:
    """Every document in `collection`, by name (then source); reads the metadata only."""
    docs: dict[str, DocumentInfo] = {}
    row_keys: dict[str, set[str]] = {}
    for batch in iter_pages(collection, ["metadatas"]):
        for meta in batch["metadatas"] or []:
            meta = dict(meta or {})
            source = str(meta.get(Meta.SOURCE) or meta.get(Meta.SOURCE_KEY) or "")
            if not source:
                continue
            doc = docs.get(source)
            if doc is None:
                doc = docs[source] = DocumentInfo(source=source, name=_name(meta))
            doc.chunks += 1
            if meta.get(Meta.PAGE) is not None:
                doc.pages.add(int(meta[Meta.PAGE]))
            merged = str(meta.get(Meta.SECTIONS) or "").split("\n")  # sections packed in a chunk
            for heading in [meta.get(Meta.HEADING_PATH), *merged]:
                if heading and heading not in doc.headings:
                    doc.headings.append(str(heading))
            stamp = meta.get(Meta.INDEXED_AT)
            if stamp and (doc.indexed_at is None or str(stamp) > doc.indexed_at):
                doc.indexed_at = str(stamp)
            if meta.get(Meta.DATASET):
                row_keys.setdefault(source, set()).add(str(meta.get(Meta.SOURCE_KEY)))
    for source, keys in row_keys.items():
        docs[source].rows = len(keys)
    return sorted(docs.values(), key=lambda d: (d.name.lower(), d.source))


@dataclass
class RemovedDocument:
    source: str
    chunks: int
    file_removed: Path | None


def remove_document(
    collection: Collection,
    source: str,
    lexical_dir: Path | None,
    uploads_dir: Path | None = None,
) -> RemovedDocument:
    """Remove the document whose chunks carry `source` from Chroma and (rebuilt from Chroma) from
    the lexical index at `lexical_dir`; when the file lies in `uploads_dir` (an uploaded copy),
    delete it too. Raises SourceError when no chunk carries `source`."""
    ids = collection.get(where={"source": source}, include=[])["ids"]
    if not ids:
        raise SourceError(f"{source} is not in the index (already removed?)")
    step = collection._client.get_max_batch_size()
    for start in range(0, len(ids), step):
        collection.delete(ids=ids[start : start + step])
    if lexical_dir is not None:
        from core.index.lexical import ensure_lexical

        ensure_lexical(collection, lexical_dir)
    removed = None
    if uploads_dir is not None:
        path = Path(source)
        try:
            inside = path.resolve().parent == uploads_dir.resolve()
        except OSError:
            inside = False
        if inside and path.is_file():
            path.unlink()
            removed = path
    log.info("removed %s: %d chunks%s", source, len(ids), " and its upload" if removed else "")
    return RemovedDocument(source, len(ids), removed)
