"""Sentence vectors kept on disk, per embedding model: the extractive answerer embeds a passage's
sentences the first time the passage is retrieved and never again, across answers, sessions,
processes and restarts. Keyed by the sentence text's digest, so a changed or pruned chunk can
never be answered with stale vectors; each write is one SQLite transaction, so a crash loses at
most the batch in flight; a damaged file is set aside and rebuilt (it holds nothing that cannot
be recomputed)."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def sentence_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def store_path(data_dir: Path, embedding_id: str) -> Path:
    """One file per embedding model (vectors of two models or backends never mix)."""
    digest = hashlib.sha256(embedding_id.encode("utf-8")).hexdigest()[:16]
    return data_dir / "sentences" / f"{digest}.sqlite"


class SentenceStore:
    """Vectors by sentence text; thread-safe; several processes may share one file."""

    def __init__(self, path: Path, embedding_id: str):
        self.path = path
        self.embedding_id = embedding_id
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._open()
        except sqlite3.OperationalError:
            raise  # locked or unopenable: the file may be fine; the caller goes on without it
        except sqlite3.DatabaseError as exc:
            stamp = int(time.time())
            log.warning("sentence vectors at %s unreadable (%s); set aside", path, exc)
            for suffix in ("", "-wal", "-shm"):
                part = path.with_name(path.name + suffix)
                if part.exists():
                    part.rename(part.with_name(f"{part.name}.damaged-{stamp}"))
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('embedding_id', ?)", (self.embedding_id,))
        conn.commit()
        (owner,) = conn.execute("SELECT value FROM meta WHERE key = 'embedding_id'").fetchone()
        if owner != self.embedding_id:
            raise sqlite3.DatabaseError(f"holds vectors of {owner}, not {self.embedding_id}")
        return conn

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among `texts`, by text."""
        keys = {sentence_key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        with self._lock:
            try:
                for start in range(0, len(items), 500):
                    batch = items[start : start + 500]
                    marks = ",".join("?" * len(batch))
                    rows = self._conn.execute(
                        f"SELECT key, vec FROM vectors WHERE key IN ({marks})", batch
                    ).fetchall()
                    for key, blob in rows:
                        found[keys[key]] = np.frombuffer(blob, np.float32).copy()
            except sqlite3.Error as exc:  # a damaged page is a miss: the vectors are recomputed
                log.warning("could not read sentence vectors from %s: %s", self.path, exc)
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors (one transaction); a vector already there is kept."""
        rows = [(sentence_key(t), np.asarray(v, np.float32).tobytes()) for t, v in vectors.items()]
        with self._lock:
            try:
                with self._conn:
                    self._conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
            except sqlite3.Error as exc:  # a full disk or a locked file must not fail an answer
                log.warning("could not keep %d sentence vectors: %s", len(rows), exc)

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
