"""The lexical (BM25, via bm25s) index over a collection's chunks, for exact names that dense search
misses: its writer (`build_lexical`, `ensure_lexical`) and its reader (`LexicalSource`).

Derived from Chroma: each build is stamped with a digest of the collection's chunk ids. The rule
for who rebuilds: the index is only ever built by `ensure_lexical`, under the folder's lock. Every
writer of a collection (ingest, the blue/green re-embed, removing a document) calls it after its
Chroma write. A reader never builds on its own account: `LexicalSource` reloads when the pointer
file names a new build, and calls the same `ensure_lexical` only when the build it reads is out of
step with Chroma (a writer killed between its two writes), so such a gap is repaired once, by
whoever reads next, and never silently used or ignored."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.index.chunks import all_ids, heading_of, iter_pages

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "CURRENT"
# A query word in at most this share of chunks (or RARE_MIN of them) is a name worth trusting.
RARE_SHARE = 0.002
RARE_MIN = 3

_WORD = re.compile(r"\w+(?:[.\-']\w+)*")
_PARTS = re.compile(r"[_.\-']+")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stemWord(word)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, stemmed; names such as `pg_dump`, `max_wal_size` or `utf-8` are kept
    whole (so an exact name matches exactly) and also split into their parts."""
    stop, stem = _stopwords(), _stem
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        parts = [p for p in _PARTS.split(word) if p]
        if len(parts) > 1:
            tokens.append(word)
        for part in parts:
            if part not in stop:
                tokens.append(stem(part) if part.isalpha() else part)
    return tokens


def lexical_text(document: str, metadata: dict[str, Any] | None) -> str:
    """What a chunk is indexed under: its heading path (or title) and its text."""
    head = heading_of(metadata)
    return f"{head}\n{document}" if head else document


def collection_stamp(ids: list[str]) -> str:
    """A digest of the chunk ids (ids change whenever a source's content or chunking does)."""
    digest = hashlib.sha256()
    for cid in sorted(ids):
        digest.update(cid.encode())
        digest.update(b"\n")
    return f"v{FORMAT_VERSION}-{digest.hexdigest()[:24]}"


def current_stamp(collection: Collection) -> str:
    return collection_stamp(all_ids(collection))


def lexical_dir(data_dir: Path, collection: Collection) -> Path:
    """Where the index of `collection` lives: by name and Chroma's id, so a re-created collection
    of the same name never reads an old index."""
    return data_dir / "lexical" / f"{collection.name}-{collection.id}"


@dataclass
class Hit:
    chunk_id: str
    score: float
    rare: bool  # matched a query word found in few chunks (an exact name)


class LexicalIndex:
    """A loaded BM25 index: chunk ids in index order, the bm25s retriever, and its stamp."""

    def __init__(self, ids: list[str], retriever: Any, stamp: str):
        self.ids = ids
        self.retriever = retriever
        self.stamp = stamp
        indptr = np.asarray(retriever.scores["indptr"])
        self._df = np.diff(indptr)  # chunks containing each vocabulary token
        self._rare_df = max(RARE_MIN, int(len(ids) * RARE_SHARE))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> list[Hit]:
        """The `k` best chunks for `query` by BM25, best first; chunks sharing no word are left
        out."""
        vocab = self.retriever.vocab_dict
        tokens = [t for t in tokenize(query) if t in vocab]
        if not tokens or not self.ids:
            return []
        scores = self.retriever.get_scores(tokens)
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        rare_ids = {vocab[t] for t in tokens if self._df[vocab[t]] <= self._rare_df}
        hits = []
        for i in top:
            if scores[i] <= 0:
                break
            rare = bool(rare_ids) and self._has_any(int(i), rare_ids)
            hits.append(Hit(self.ids[i], float(scores[i]), rare))
        return hits

    def _has_any(self, doc: int, token_ids: set[int]) -> bool:
        sc = self.retriever.scores
        for t in token_ids:
            lo, hi = sc["indptr"][t], sc["indptr"][t + 1]
            if doc in sc["indices"][lo:hi]:
                return True
        return False


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def current_build(directory: Path) -> str | None:
    """The name of the build `directory/CURRENT` points at; None when there is none."""
    try:
        return (directory / CURRENT).read_text().strip() or None
    except OSError:
        return None


def load_lexical(directory: Path) -> LexicalIndex | None:
    """The index named by `directory/CURRENT`, or None when there is none or it is unreadable."""
    from core.logs import load_bm25s

    bm25s = load_bm25s()

    try:
        name = (directory / CURRENT).read_text().strip()
        build = directory / name
        meta = json.loads((build / "chunks.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            return None
        if not meta["ids"]:
            return LexicalIndex([], _EmptyRetriever(), meta["stamp"])
        retriever = bm25s.BM25.load(str(build), mmap=False, show_progress=False, verbosity=0)
    except (OSError, ValueError, KeyError) as exc:
        if (directory / CURRENT).exists():
            log.warning("lexical index in %s unreadable (%s); it will be rebuilt", directory, exc)
        return None
    return LexicalIndex(meta["ids"], retriever, meta["stamp"])


def build_lexical(collection: Collection, directory: Path, progress: bool = False) -> LexicalIndex:
    """Index every chunk of `collection` and make it the current build, atomically: a new build
    folder first, then `CURRENT` replaced in one rename, then older builds removed."""
    from core.logs import load_bm25s

    bm25s = load_bm25s()
    from tqdm import tqdm

    started = time.perf_counter()
    ids: list[str] = []
    corpus: list[list[str]] = []
    total = collection.count()
    with tqdm(total=total, unit="chunk", desc="lexical index", disable=not progress) as bar:
        for batch in iter_pages(collection, ["documents", "metadatas"]):
            for cid, doc, meta in zip(
                batch["ids"], batch["documents"], batch["metadatas"], strict=True
            ):
                ids.append(cid)
                corpus.append(tokenize(lexical_text(doc or "", meta)))
            bar.update(len(batch["ids"]))
    stamp = collection_stamp(ids)
    retriever = bm25s.BM25()
    if corpus:
        retriever.index(corpus, show_progress=False)
    with _locked(directory):
        build = directory / f"{stamp}-{uuid.uuid4().hex[:8]}"
        if corpus:
            retriever.save(str(build), show_progress=False)
        else:
            build.mkdir(parents=True)
        (build / "chunks.json").write_text(
            json.dumps({"format": FORMAT_VERSION, "stamp": stamp, "ids": ids})
        )
        pointer = directory / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
        pointer.write_text(build.name)
        os.replace(pointer, directory / CURRENT)
        for old in directory.iterdir():
            if old.is_dir() and old.name != build.name:
                shutil.rmtree(old, ignore_errors=True)
    log.info("lexical index: %d chunks in %.1f s", len(ids), time.perf_counter() - started)
    if not corpus:
        return LexicalIndex([], _EmptyRetriever(), stamp)
    return LexicalIndex(ids, retriever, stamp)


class _EmptyRetriever:
    vocab_dict: dict[str, int] = {}  # noqa: RUF012 - read-only
    scores: dict[str, Any] = {"indptr": np.zeros(1, np.int64)}  # noqa: RUF012

    def get_scores(self, tokens: list[str]) -> np.ndarray:
        return np.zeros(0)


def ensure_lexical(
    collection: Collection, directory: Path, progress: bool = False
) -> tuple[LexicalIndex, bool]:
    """The index of `collection`, rebuilt from Chroma when missing or stale; and whether it was."""
    index = load_lexical(directory)
    if index is not None and index.stamp == current_stamp(collection):
        return index, False
    if index is not None:
        log.info("lexical index of %r is stale; rebuilding it from Chroma", collection.name)
    return build_lexical(collection, directory, progress=progress), True


class LexicalSource:
    """A collection's lexical index as a reader sees it: loaded once, reloaded when a writer (in
    this or another process) points `CURRENT` at a new build, and repaired through
    `ensure_lexical` when the build is out of step with Chroma (see the module's rule)."""

    def __init__(self, collection: Collection, directory: Path):
        self.collection = collection
        self.directory = directory
        self._index: LexicalIndex | None = None
        self._pointer: str | None = None
        self._lock = threading.Lock()

    def get(self) -> LexicalIndex:
        """The current index; cheap when nothing changed (one small file read and a count)."""
        with self._lock:
            pointer = current_build(self.directory)
            if self._index is None or pointer != self._pointer:
                self._index = load_lexical(self.directory) if pointer else None
                self._pointer = pointer
            if self._index is None or len(self._index) != self.collection.count():
                first = not self.directory.exists()  # never built here: nothing was lost
                self._index, rebuilt = ensure_lexical(self.collection, self.directory)
                if rebuilt and first:
                    log.info("built the lexical index of %r from Chroma", self.collection.name)
                elif rebuilt:
                    log.warning("lexical index was missing or stale; rebuilt from Chroma")
                self._pointer = current_build(self.directory)
            return self._index
