"""What a chunk is in a collection: its id, the text the model embeds, its metadata keys, and one
way to page through a collection. Ingest writes chunks by these rules; rag, eval and finetune read
them by the same ones."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from core.markdown import fence_kinds

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

PAGE = 5000  # chunks per Chroma request when paging through a collection


class Meta:
    """The metadata keys ingest writes on every chunk (and readers rely on)."""

    SOURCE = "source"  # a file's path or a dataset's name, as shown to the user
    SOURCE_KEY = "source_key"  # `file:<path>` or `dataset:<name>[<row>]`: identifies the source
    INGEST_KEY = "ingest_key"  # content hash + chunking: one build of the source
    SPLITTER_VERSION = "splitter_version"
    CHUNK_INDEX = "chunk_index"  # position in the build, from 0
    N_CHUNKS = "n_chunks"  # chunks in the build: a source is complete when all are present
    CONTENT_HASH = "content_hash"
    INDEXED_AT = "indexed_at"
    FILE_NAME = "file_name"
    TITLE = "title"
    HEADING_PATH = "heading_path"  # `Title > Section > Subsection`
    SECTIONS = "sections"  # heading paths of further sections packed into the chunk, one a line
    SECTION = "section"
    PAGE = "page"
    DATASET = "dataset"
    # A code block the splitter cut: the chunk starts inside it (CODE_OPEN) or ends inside it
    # (CODE_CLOSE), each holding the block's fence ("```", "~~~"; True in collections built
    # before fences were kept, which read as "```"). The text is embedded as cut; readers mend
    # it (see `readable`).
    CODE_OPEN = "code_open"
    CODE_CLOSE = "code_close"
    # The chunk starts inside a code block in the middle of a line (the splitter's overlap began
    # at a dot inside a word): the part line is the end of one the chunk before holds whole.
    CODE_PARTIAL = "code_partial"


class ChunkMetadata(TypedDict, total=False):
    """A chunk's metadata as ingest writes it (a loader may add fields of its own)."""

    source: str
    source_key: str
    ingest_key: str
    splitter_version: str
    chunk_index: int
    n_chunks: int
    content_hash: str
    indexed_at: str
    file_name: str
    title: str
    heading_path: str
    sections: str
    section: str
    page: int
    dataset: str


@dataclass
class Chunk:
    id: str
    text: str  # stored, shown and quoted
    metadata: dict[str, Any]
    embed_text: str = ""  # what the model embeds: heading path + text

    def __post_init__(self) -> None:
        self.embed_text = self.embed_text or self.text


def chunk_id(source_key: str, ingest_key: str, index: int) -> str:
    """The id of a source's `index`-th chunk in the build `ingest_key`: deterministic, so a re-run
    overwrites, and a source's chunks can be named from one chunk's metadata."""
    key_hash = hashlib.sha256(source_key.encode()).hexdigest()[:16]
    return f"{key_hash}-{ingest_key[:12]}-{index:05d}"


def embed_text(prefix: str, text: str) -> str:
    """What the model embeds for a chunk: its heading path (as ingest shortened it to fit the
    window), then the chunk itself."""
    return f"{prefix}\n\n{text}" if prefix else text


def readable(text: str, metadata: dict[str, Any] | None) -> str:
    """A chunk's text as a reader takes it (the answerer, a source card): a code block cut where
    the chunk starts is reopened and one cut where it ends is closed, so code is never read as
    prose nor prose as code; a chunk that starts mid-line inside a block reads from the next
    line. Bare fences: the text's words are otherwise the same as embedded."""
    meta = metadata or {}
    if opened := meta.get(Meta.CODE_OPEN):
        fence = _fence(opened)
        if meta.get(Meta.CODE_PARTIAL):
            text = text.split("\n", 1)[1] if "\n" in text else ""
            first = text.split("\n", 1)[0]
            if fence_kinds([fence, first])[1] == "fence":  # the block closes right there
                text = text.split("\n", 1)[1].lstrip("\n") if "\n" in text else ""
                fence = ""
        if fence:
            text = f"{fence}\n{text}"
    if closed := meta.get(Meta.CODE_CLOSE):
        text += f"\n{_fence(closed)}"
    return text


def _fence(value: Any) -> str:
    return value if isinstance(value, str) else "```"


def heading_of(metadata: dict[str, Any] | None) -> str:
    """The chunk's heading path, else its title, else ''."""
    meta = metadata or {}
    return str(meta.get(Meta.HEADING_PATH) or meta.get(Meta.TITLE) or "")


def build_of(metadata: dict[str, Any] | None) -> tuple[str, str, int, int] | None:
    """(source key, ingest key, chunk index, chunks in the build) of a chunk ingest wrote; None
    for a chunk another tool wrote."""
    meta = metadata or {}
    try:
        return (
            str(meta[Meta.SOURCE_KEY]),
            str(meta[Meta.INGEST_KEY]),
            int(meta[Meta.CHUNK_INDEX]),
            int(meta[Meta.N_CHUNKS]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def iter_pages(
    collection: Collection,
    include: list[str],
    where: dict[str, Any] | None = None,
    page: int = PAGE,
) -> Iterator[dict[str, Any]]:
    """The collection in pages of `page` chunks (Chroma's `get` results: ids plus `include`)."""
    offset = 0
    while True:
        batch = collection.get(include=include, where=where, limit=page, offset=offset)
        yield batch
        if len(batch["ids"]) < page:
            return
        offset += page


def all_ids(collection: Collection) -> list[str]:
    """Every chunk id of the collection."""
    return [cid for batch in iter_pages(collection, []) for cid in batch["ids"]]
