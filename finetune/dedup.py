"""Repeated questions in training data: an exact match of the normalised text, then a question
whose embedding is at least a threshold cosine from one kept before (near duplicates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from core.questions import normalise_question

if TYPE_CHECKING:
    from core.settings import Settings

Embed = Callable[[list[str]], np.ndarray]


class NearDuplicates:
    """Questions seen so far: exact matches of the normalised text, then embedding cosine
    similarity at or above a threshold. Holds one key and one vector per kept question."""

    def __init__(self, embed: Embed | None, threshold: float | None):
        self.embed = embed if threshold is not None else None
        self.threshold = threshold
        self.keys: set[str] = set()
        self._vectors = np.zeros((0, 0), np.float32)
        self._n = 0

    def _add_vector(self, v: np.ndarray) -> None:
        if self._vectors.shape[0] == self._n:  # grow by doubling, like a list
            grown = np.zeros((max(256, 2 * self._n), v.shape[0]), np.float32)
            if self._n:
                grown[: self._n] = self._vectors[: self._n]
            self._vectors = grown
        self._vectors[self._n] = v
        self._n += 1

    def check(self, questions: list[str]) -> list[str | None]:
        """For each question in order: None if new (it is then remembered), else the reason."""
        out: list[str | None] = [None] * len(questions)
        fresh: list[tuple[int, str]] = []
        batch_keys: set[str] = set()
        for i, q in enumerate(questions):
            key = normalise_question(q)
            if key in self.keys or key in batch_keys:
                out[i] = "duplicate_question"
            else:
                batch_keys.add(key)
                fresh.append((i, key))
        if self.embed is None or not fresh:
            self.keys.update(key for _, key in fresh)
            return out
        vectors = np.asarray(self.embed([questions[i] for i, _ in fresh]), np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        known = self._vectors[: self._n]
        best = (vectors @ known.T).max(axis=1) if self._n else np.full(len(fresh), -1.0)
        within = vectors @ vectors.T  # against questions kept earlier in this batch
        kept: list[int] = []
        for j, (i, key) in enumerate(fresh):
            if best[j] >= self.threshold or (kept and within[j, kept].max() >= self.threshold):
                out[i] = "near_duplicate_question"
                continue
            kept.append(j)
            self.keys.add(key)
            self._add_vector(vectors[j])
        return out


def embedder(settings: Settings) -> Embed:
    """The configured embedding model as a near-duplicate detector (see
    RAG_FINETUNE__DEDUP_BACKEND), loaded once."""
    from core.embedding.providers import build_embedding

    cfg = settings.embedding.model_copy()
    if cfg.provider == "local":
        cfg.backend = settings.finetune.dedup_backend
    cfg.batch_size = max(cfg.batch_size or 0, 256)
    model = build_embedding(cfg, cache_dir=cfg.cache_dir or settings.data_dir / "models")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.get_text_embedding_batch(texts), np.float32)

    return embed
