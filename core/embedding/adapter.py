"""A linear query adapter served over a frozen embedding model: questions are embedded by the model
and then mapped by `q + W q + b`; passages are embedded by the model alone, so an index built with
the model needs no re-embedding. Trained by finetune (finetune/embedding/adapter.py), saved as
`adapter.safetensors` + `adapter.json`, applied at query time by the app when an embedding version
names it (`embedding.query_adapter`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter.json"


@dataclass
class QueryAdapter:
    """`q -> normalise(q + W q + b)`; W starts at zero, so an untrained adapter is the identity."""

    weight: np.ndarray  # (dim, dim)
    bias: np.ndarray  # (dim,)
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.bias.shape[0])

    def apply(self, vectors: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Adapted, unit-length query vectors (one per row)."""
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ConfigError(
                f"the query adapter expects {self.dim}-dimensional embeddings, got shape {q.shape}"
            )
        out = q + q @ self.weight.T + self.bias
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    def save(self, directory: Path) -> None:
        """Write the weights (safetensors) and the metadata (JSON) under `directory`."""
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)},
            str(directory / WEIGHTS),
        )
        (directory / CONFIG).write_text(json.dumps({**self.meta, "dim": self.dim}, indent=2))


def load_adapter(directory: Path) -> QueryAdapter:
    """The adapter saved in `directory`; ConfigError saying what is wrong when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        meta = json.loads((directory / CONFIG).read_text())
        tensors = load_file(str(directory / WEIGHTS))
        weight, bias = tensors["weight"], tensors["bias"]
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise ConfigError(
            f"cannot read the query adapter in {directory} ({exc}); train one with "
            "`python -m finetune.embedding adapter` or unset RAG_EMBEDDING__QUERY_ADAPTER"
        ) from exc
    if weight.shape != (bias.shape[0], bias.shape[0]):
        raise ConfigError(f"the query adapter in {directory} is malformed: {weight.shape}")
    return QueryAdapter(weight, bias, meta)


def adapter_fingerprint(directory: Path) -> str:
    """A short digest of the adapter's weights (part of the app's model cache key)."""
    try:
        return hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()[:12]
    except OSError:
        return "missing"


class AdaptedEmbedding(BaseEmbedding):
    """An embedding model whose query embeddings pass through a QueryAdapter; text (passage)
    embeddings are the inner model's own, so its collection is read as it was built."""

    _inner: BaseEmbedding = PrivateAttr()
    _adapter: QueryAdapter = PrivateAttr()

    def __init__(self, inner: BaseEmbedding, adapter: QueryAdapter, **kwargs: Any):
        super().__init__(
            model_name=f"{inner.model_name}+adapter",
            embed_batch_size=inner.embed_batch_size,
            **kwargs,
        )
        self._inner = inner
        self._adapter = adapter

    @property
    def inner(self) -> BaseEmbedding:
        return self._inner

    @classmethod
    def class_name(cls) -> str:
        return "AdaptedEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._adapter.apply([self._inner.get_query_embedding(query)])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._inner.get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._inner.get_text_embedding_batch(texts)
