"""Chunks the embedding model sees whole: lengths are measured in the model's own tokenizer and fit
its window together with the heading prefix each chunk is embedded with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import ChunkingSettings

log = logging.getLogger(__name__)

PREFIX_SHARE = 4  # a heading prefix may take at most a quarter of the window
MIN_CHUNK = 16


@dataclass
class ChunkPlan:
    """How long chunks are, in the tokens of the model that embeds them."""

    encode: Callable[[str], list[int]]
    window: int  # tokens the model reads per text, special tokens excluded
    size: int  # chunk budget before the prefix is taken off
    overlap: int
    warning: str | None = None
    _splitters: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """What shapes the chunks; part of every source's ingest key."""
        return f"w{self.window}|s{self.size}|o{self.overlap}"

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def _splitter(self, budget: int):
        from llama_index.core.node_parser import SentenceSplitter

        if budget not in self._splitters:
            self._splitters[budget] = SentenceSplitter(
                chunk_size=budget,
                chunk_overlap=min(self.overlap, budget // 4),
                tokenizer=self.encode,
            )
        return self._splitters[budget]

    def prefix_for(self, heading_path: str | None) -> str:
        """The heading path as embedded before a chunk, shortened to keep room for the text."""
        if not heading_path:
            return ""
        parts = heading_path.split(" > ")
        candidates = [heading_path]
        if len(parts) > 2:
            candidates.append(f"{parts[0]} > {parts[-1]}")
        candidates.append(parts[-1])
        for prefix in candidates:
            if self.count(prefix) <= self.window // PREFIX_SHARE:
                return prefix
        return ""

    def split(self, text: str, prefix: str) -> list[str]:
        """Pieces of `text` that, each with `prefix` before it, fit the window."""
        room = self.window - (self.count(prefix) + 1 if prefix else 0)
        budget = max(MIN_CHUNK, min(self.size, room))
        pieces = [p for p in self._splitter(budget).split_text(text) if p.strip()]
        fitted: list[str] = []
        for piece in pieces:
            # The splitter adds token counts of sentences; joined text can count a little more.
            while self.count(embed_text(prefix, piece)) > self.window and budget > MIN_CHUNK:
                budget = max(MIN_CHUNK, int(budget * 0.85))
                sub = [p for p in self._splitter(budget).split_text(piece) if p.strip()]
                if len(sub) <= 1:
                    break
                fitted.extend(sub[:-1])
                piece = sub[-1]
            fitted.append(piece)
        return fitted


def embed_text(prefix: str, text: str) -> str:
    """What the model embeds for a chunk: its heading path, then the chunk itself."""
    return f"{prefix}\n\n{text}" if prefix else text


def plan_chunks(chunking: ChunkingSettings, embed_model: BaseEmbedding) -> ChunkPlan:
    """The chunk plan for this model: the configured size, or the model's window when unset; a
    size beyond the window is clamped with a warning (the rest would never be embedded)."""
    from core.embeddings import embedding_tokenizer

    encode, window = embedding_tokenizer(embed_model)
    size = chunking.size or window
    warning = None
    if size > window:
        warning = (
            f"chunk size {size} is larger than the {window} tokens the embedding model reads; "
            f"using {window} (set RAG_CHUNKING__SIZE to {window} or less to silence this)"
        )
        log.warning(warning)
        size = window
    overlap = chunking.overlap if chunking.overlap is not None else size // 8
    overlap = min(overlap, size // 2)
    return ChunkPlan(encode=encode, window=window, size=size, overlap=overlap, warning=warning)
