"""The ingest pipeline: sources -> sections -> chunks -> embeddings -> Chroma, idempotently.

The manifest is the collection itself: every chunk carries its source key, the ingest key (content
hash + chunking) it was built from and how many chunks that build has. A source is complete when all
of them are present, so a run killed anywhere is repaired by the next run. The lexical (BM25) index
is derived from the collection after every write and stamped with its chunk ids, so it can never
silently disagree with Chroma (see core/index/lexical.py)."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SourceError
from core.index.chunks import Chunk, Meta, chunk_id, embed_text, iter_pages
from ingest.chunking import ChunkPlan, code_cuts, pack_sections, plan_chunks
from ingest.sources import DATASET_PREFIX, FILE_PREFIX, SourceDoc, SourceFailure

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import ChunkingSettings

# Bumped whenever chunking changes in a way that must re-embed unchanged files.
# 2: main-content HTML, heading paths embedded with each chunk, chunks sized in the model's tokens.
# 3: definitions carry their terms, table rows their headers, code blocks their fences; PDF running
#    headers, footers and page numbers removed.
# 4: a definition inside a definition (a value of an option) carries its parent's term.
# 5: an entry of a one-column table written in paragraphs (a function's signature, its
#    description and examples) carries its term like a definition; a list item's paragraph keeps
#    its marker; an admonition's label inside a definition does not take the term.
# 6: a chunk the splitter cut inside a code block says so (code_open, code_close), for readers.
# 7: a Markdown definition list ("Term" then ": definition") is read as "Term: definition".
# 8: a Markdown table or heading inside fenced code (psql output in a ``` block, a ``` line
#    inside a ~~~ block) stays code, as written; a DOCX paragraph or table row is a paragraph of
#    the text (rows no longer run into one sentence).
# 9: a cut inside a ~~~ block (or a ```` block holding ``` lines) is found, and the chunk keeps
#    the block's own fence in code_open / code_close, so its reader reopens it with that fence; a
#    chunk starting inside a block mid-line says so (code_partial), and its reader skips the
#    part line (the chunk before holds it whole).
SPLITTER_VERSION = "9"
# Chunks embedded and written together; sources are never split across two flushes.
FLUSH_CHUNKS = 256
# Sources read and chunked ahead of the one being embedded.
LOOKAHEAD = 2


@dataclass
class SourceState:
    """What the collection holds for one source: chunk counts per ingest key, expected counts."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    expected: dict[str, int] = field(default_factory=dict)
    splitters: set[str] = field(default_factory=set)

    def complete(self, ingest_key: str) -> bool:
        return set(self.counts) == {ingest_key} and self.counts[ingest_key] == self.expected.get(
            ingest_key
        )


@dataclass
class IngestReport:
    """The one-line summary's numbers, plus each failure by name with its reason."""

    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    # Each source by name: "new", "changed" or "unchanged" (failures are in `failed`).
    outcomes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings and one-off upgrades, for the user
    lexical_rebuilt: bool = False
    chunks_written: int = 0
    chunks_deleted: int = 0
    pruned: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"files seen {self.seen}, new {self.new}, changed {self.changed}, "
            f"unchanged {self.unchanged}, failed {len(self.failed)}, pruned {self.pruned}; "
            f"chunks written {self.chunks_written}, deleted {self.chunks_deleted}; "
            f"{self.seconds:.1f}s"
        )


def read_state(collection: Collection) -> dict[str, SourceState]:
    """The manifest: per source key, which builds of it the collection holds and how complete."""
    state: dict[str, SourceState] = defaultdict(SourceState)
    for batch in iter_pages(collection, ["metadatas"]):
        for meta in batch["metadatas"] or []:
            key = meta.get(Meta.SOURCE_KEY)
            if key is None:
                continue  # not written by this pipeline
            entry = state[str(key)]
            ingest_key = str(meta[Meta.INGEST_KEY])
            entry.counts[ingest_key] += 1
            entry.expected[ingest_key] = int(meta[Meta.N_CHUNKS])
            entry.splitters.add(str(meta.get(Meta.SPLITTER_VERSION, "1")))
    return dict(state)


def outdated_files(collection: Collection) -> list[Path]:
    """Files still on disk whose chunks an older splitter made (to re-embed once after an
    upgrade). Cheap when there are none: one id-only query."""
    current = collection.get(where={Meta.SPLITTER_VERSION: SPLITTER_VERSION}, include=[])["ids"]
    if len(current) == collection.count():
        return []
    paths = []
    for key, entry in read_state(collection).items():
        if entry.splitters - {SPLITTER_VERSION} and key.startswith(FILE_PREFIX):
            path = Path(key[len(FILE_PREFIX) :])
            if path.exists():
                paths.append(path)
    return sorted(paths)


def ingest_key_for(source: SourceDoc, plan: ChunkPlan) -> str:
    """Content hash plus everything that shapes the chunks: change any and the source re-embeds."""
    raw = f"{source.fingerprint}|{plan.key}|{SPLITTER_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def chunk_source(source: SourceDoc, ingest_key: str, plan: ChunkPlan) -> list[Chunk]:
    """Split every section of a source into chunks that fit the model's window together with
    their heading path; ids are deterministic so a re-run overwrites, never adds."""
    sections = pack_sections(source.load(), plan)
    pieces: list[tuple[str, str, dict[str, Any]]] = []
    for section in sections:
        prefix = plan.prefix_for(section.metadata.get(Meta.HEADING_PATH))
        texts = plan.split(section.text, prefix)
        for text, (opened, closed, partial) in zip(
            texts, code_cuts(section.text, texts), strict=True
        ):
            cut: dict[str, Any] = {Meta.CODE_OPEN: opened} if opened else {}
            if partial:
                cut[Meta.CODE_PARTIAL] = True
            if closed:
                cut[Meta.CODE_CLOSE] = closed
            pieces.append((text, prefix, {**section.metadata, **cut}))
    if not pieces:
        raise SourceError("no text to index")
    # When this build was made: shown in the documents list (not part of the ingest key).
    indexed_at = datetime.now(UTC).isoformat(timespec="seconds")
    chunks = []
    for index, (text, prefix, section_meta) in enumerate(pieces):
        metadata = {
            **source.metadata,
            **section_meta,
            Meta.SOURCE_KEY: source.key,
            Meta.INGEST_KEY: ingest_key,
            Meta.SPLITTER_VERSION: SPLITTER_VERSION,
            Meta.CHUNK_INDEX: index,
            Meta.N_CHUNKS: len(pieces),
            Meta.CONTENT_HASH: hashlib.sha256(text.encode()).hexdigest()[:16],
            Meta.INDEXED_AT: indexed_at,
        }
        chunks.append(
            Chunk(
                chunk_id(source.key, ingest_key, index),
                text,
                metadata,
                embed_text(prefix, text),
            )
        )
    return chunks


def _delete_stale(collection: Collection, key: str, keep: str | None) -> int:
    where: dict[str, Any] = {Meta.SOURCE_KEY: key}
    if keep is not None:
        where = {"$and": [{Meta.SOURCE_KEY: key}, {Meta.INGEST_KEY: {"$ne": keep}}]}
    stale = collection.get(where=where, include=[])["ids"]
    if stale:
        collection.delete(ids=stale)
    return len(stale)


class _Writer:
    """Buffers chunks of whole sources, embeds them in large batches, then commits each source."""

    def __init__(self, collection: Collection, embed_model: BaseEmbedding, report: IngestReport):
        self.collection = collection
        self.embed_model = embed_model
        self.report = report
        self.pending: list[tuple[SourceDoc, str, list[Chunk]]] = []
        self.size = 0
        self.max_batch = collection._client.get_max_batch_size()
        self.dimension_recorded = False

    def add(self, source: SourceDoc, ingest_key: str, chunks: list[Chunk]) -> None:
        self.pending.append((source, ingest_key, chunks))
        self.size += len(chunks)
        if self.size >= FLUSH_CHUNKS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunks = [c for _, _, cs in self.pending for c in cs]
        # Batches of texts of like length pad least: embed longest first, then restore the order.
        order = sorted(range(len(chunks)), key=lambda i: -len(chunks[i].embed_text))
        embedded = self.embed_model.get_text_embedding_batch([chunks[i].embed_text for i in order])
        vectors: list[list[float]] = [[]] * len(chunks)
        for i, vector in zip(order, embedded, strict=True):
            vectors[i] = vector
        if not self.dimension_recorded and vectors:
            from core.index.store import record_dimension

            record_dimension(self.collection, len(vectors[0]))
            self.dimension_recorded = True
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.collection.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[start : start + self.max_batch],
                documents=[c.text for c in part],
                metadatas=[c.metadata for c in part],
            )
        # Only once every new chunk of a source is in place do its old ones go.
        for source, ingest_key, written in self.pending:
            self.report.chunks_written += len(written)
            self.report.chunks_deleted += _delete_stale(self.collection, source.key, ingest_key)
        self.pending, self.size = [], 0


def _prune(
    collection: Collection, state: dict[str, SourceState], seen: set[str], datasets: set[str]
) -> tuple[int, int]:
    """Remove vanished sources: files gone from disk, rows gone from a dataset read now."""
    sources = chunks = 0
    for key in state:
        if key in seen:
            continue
        gone = False
        if key.startswith(FILE_PREFIX):
            gone = not Path(key[len(FILE_PREFIX) :]).exists()
        elif key.startswith(DATASET_PREFIX):
            gone = key[len(DATASET_PREFIX) :].rsplit("[", 1)[0] in datasets
        if gone:
            chunks += _delete_stale(collection, key, None)
            sources += 1
    return sources, chunks


def ingest_sources(
    sources: Iterable[SourceDoc | SourceFailure],
    collection: Collection,
    embed_model: BaseEmbedding,
    chunking: ChunkingSettings,
    prune: bool = False,
    pruned_datasets: Iterable[str] = (),
    progress: bool = True,
    lexical_dir: Path | None = None,
) -> IngestReport:
    """Bring the collection in line with `sources`: embed only new or changed ones, repair
    half-written ones, optionally prune vanished ones. Bad sources are reported, never fatal.
    With `lexical_dir`, the lexical index there is then brought in step with the collection."""
    from tqdm import tqdm

    started = time.perf_counter()
    report = IngestReport()
    state = read_state(collection)
    plan = plan_chunks(chunking, embed_model)
    if plan.warning:
        report.notes.append(plan.warning)
    outdated = sum(1 for entry in state.values() if entry.splitters - {SPLITTER_VERSION})
    if outdated:
        report.notes.append(
            f"{outdated} indexed source(s) were chunked by an older version of ingest; each is "
            "re-embedded once when ingested again (clean text, heading paths, chunks that fit "
            "the embedding model)"
        )
        if progress:
            tqdm.write(report.notes[-1])
    writer = _Writer(collection, embed_model, report)
    seen: set[str] = set()
    bar = tqdm(sources, unit="file", disable=not progress, desc="ingest")
    # Reading and chunking the next sources (pure Python) runs in a helper thread while the
    # embedding model (torch, which releases the GIL) works on the current batch.
    ahead: deque[tuple[SourceDoc, str, bool, Future[list[Chunk]]]] = deque()

    def settle(source: SourceDoc, ingest_key: str, existed: bool, job: Future) -> None:
        try:
            chunks = job.result()
        except SourceError as exc:
            report.failed.append((source.name, str(exc)))
            return
        if existed:
            report.changed += 1
        else:
            report.new += 1
        report.outcomes[source.name] = "changed" if existed else "new"
        writer.add(source, ingest_key, chunks)
        bar.set_postfix(chunks=report.chunks_written + writer.size, refresh=False)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunker") as pool:
        for source in bar:
            report.seen += 1
            if isinstance(source, SourceFailure):
                report.failed.append((source.name, source.reason))
                continue
            seen.add(source.key)
            ingest_key = ingest_key_for(source, plan)
            existing = state.get(source.key)
            if existing is not None and existing.complete(ingest_key):
                report.unchanged += 1
                report.outcomes[source.name] = "unchanged"
                continue
            existed = existing is not None and bool(existing.counts)
            job = pool.submit(chunk_source, source, ingest_key, plan)
            ahead.append((source, ingest_key, existed, job))
            if len(ahead) > LOOKAHEAD:
                settle(*ahead.popleft())
        while ahead:
            settle(*ahead.popleft())
    writer.flush()
    if prune:
        report.pruned, deleted = _prune(collection, state, seen, set(pruned_datasets))
        report.chunks_deleted += deleted
    if lexical_dir is not None:
        from core.index.lexical import ensure_lexical

        _, report.lexical_rebuilt = ensure_lexical(collection, lexical_dir, progress=progress)
    report.seconds = time.perf_counter() - started
    return report
