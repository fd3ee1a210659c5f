"""Embedding providers, chosen by name: `local` (sentence-transformers, the packaged
all-MiniLM-L6-v2 by default) and `openai` (any OpenAI-compatible embeddings endpoint)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.embedding.window import (
    PACKAGED_MODEL_NAME,
    local_model_dir,
    model_window,
    packaged_model_dir,
    position_limit,
    window_of,
)
from core.errors import ConfigError

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import EmbeddingSettings

DEFAULT_OPENAI_EMBEDDING = "text-embedding-3-small"
# The backend of new collections: the fastest whose retrieval quality stays within 0.01 hit@5
# of torch on bench/speed.py (figures in bench/README.md). On a CPU with Intel AMX that is torch
# under bfloat16 autocast, which embeds as torch does (mean cosine to fp32 above 0.9999); elsewhere
# int8 ONNX Runtime. AVX512-BF16 without AMX (AMD Zen 4) was measured slower in bfloat16 than int8:
# 173 s against 117 s for the manual's 4,680 chunks at 512 pieces. Collections built with another
# backend keep theirs (resolve_backend).
FALLBACK_BACKEND = "onnx-int8"
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")


def amx_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in AMX tiles (Intel, read on Linux)."""
    try:
        with cpuinfo.open() as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def batch_of(cfg: EmbeddingSettings, backend: str | None = None) -> int:
    """Texts per batch: the configured number, else one measured near the fastest for the backend
    on 512-piece chunks. Long batches spend their time moving attention matrices (a batch of 16
    at 512 pieces holds 200 MB of attention scores a layer), not computing. bfloat16 torch with
    AMX: 19.3k pieces/s at 16, 14.4k at 32, 15.5k at 64. int8 ONNX: on an AVX512-BF16 EPYC, the
    manual's 4,680 chunks in 113 s at 8, 117 s at 16, 129 s at 32; on a 2-core Xeon with VNNI,
    the median of six interleaved runs over 160 chunks of 200 to 510 pieces was 32.5 chunks/s at
    2, 32.2 at 4, 28.5 at 8 and 26.6 at 16 (4 rather than 2: as fast, with half the calls for
    short texts)."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    if backend == "onnx-int8":
        return 4
    return 16 if backend == "torch-bf16" else 64


def default_backend() -> str:
    """The backend new collections are built with on this machine."""
    return "torch-bf16" if amx_bf16() else FALLBACK_BACKEND


DEFAULT_BACKEND = default_backend()


def default_cache_dir() -> Path:
    """Where ONNX exports go when neither the caller nor the settings name a folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rag-chat" / "models"


def embedding_id(cfg: EmbeddingSettings) -> str:
    """A stable name for the configured model, recorded on every collection it builds.

    The packaged model is named by its hub name; another local directory by its folder name plus a
    fingerprint of its weights, so a fine-tuned model saved over the same folder counts as new. A
    window other than the model's own is part of the name (`@512`), and so is a backend other than
    torch (`+onnx-int8`): either embeds differently, so a change re-embeds."""
    if cfg.provider == "openai":
        return f"openai:{cfg.model or DEFAULT_OPENAI_EMBEDDING}"
    if cfg.provider != "local":
        _unknown(cfg.provider)
    path = local_model_dir(cfg)
    reads = window_of(cfg, path)
    window = f"@{reads}" if reads != model_window(path) else ""
    backend = cfg.backend or DEFAULT_BACKEND
    if backend != "torch":
        window += f"+{backend}"
    if path.resolve() == packaged_model_dir().resolve():
        return f"local:{PACKAGED_MODEL_NAME}{window}"
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
        digest.update(str(weights.stat().st_size).encode())
    return f"local:{path.resolve().name}@{digest.hexdigest()[:12]}{window}"


def resolve_backend(cfg: EmbeddingSettings, built_with: str | None) -> EmbeddingSettings:
    """Settings with the backend and window decided: the configured ones; else those that built
    the collection (an index made before a default changed keeps working as it was built); else
    the defaults."""
    if cfg.provider != "local" or (cfg.backend is not None and cfg.max_seq_length is not None):
        return cfg
    if built_with:
        path = local_model_dir(cfg)
        backends = [cfg.backend] if cfg.backend else BACKENDS
        windows = (
            [cfg.max_seq_length]
            if cfg.max_seq_length
            else [window_of(cfg, path), model_window(path)]
        )
        for window in dict.fromkeys(windows):
            for backend in backends:
                candidate = cfg.model_copy(update={"backend": backend, "max_seq_length": window})
                if embedding_id(candidate) == built_with:
                    return candidate
    return cfg.model_copy(update={"backend": cfg.backend or DEFAULT_BACKEND})


def _build_local(cfg: EmbeddingSettings, cache_dir: Path | None) -> BaseEmbedding:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    path = local_model_dir(cfg)
    window = window_of(cfg, path)
    if cfg.max_seq_length is not None:
        limit = position_limit(path)
        if limit is not None and cfg.max_seq_length > limit:
            raise ConfigError(
                f"RAG_EMBEDDING__MAX_SEQ_LENGTH={cfg.max_seq_length} is beyond what the model at "
                f"{path} can read ({limit} positions); use {limit} or less"
            )
    backend = cfg.backend or DEFAULT_BACKEND
    if backend not in ("torch", "torch-bf16"):
        from core.embedding.onnx import OnnxEmbedding

        # The app and the CLIs keep exports under the data directory; a bare library call uses
        # the user's cache folder.
        cache_dir = cache_dir or cfg.cache_dir or default_cache_dir()
        return OnnxEmbedding(
            path,
            cache_dir,
            backend=backend,
            max_length=window,
            embed_batch_size=batch_of(cfg, backend),
        )
    torch_class = HuggingFaceEmbedding
    if backend == "torch-bf16":
        from core.embedding.bf16 import Bf16Embedding

        torch_class = Bf16Embedding
    return torch_class(
        model_name=str(path),
        max_length=window,
        embed_batch_size=batch_of(cfg, backend),
        device=cfg.device,
        local_files_only=True,
    )


OPENAI_WINDOW = 8191  # input limit of OpenAI's embedding models, in their tokenizer's tokens


def embedding_tokenizer(embed_model: BaseEmbedding) -> tuple[Callable[[str], list[int]], int]:
    """(the embedding model's own tokenizer, how many of its tokens the model reads per text).

    Chunks are measured with this so the model sees each one whole."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from core.embedding.onnx import OnnxEmbedding

    # A wrapper (the query adapter) reads passages with the model it wraps.
    while isinstance(getattr(embed_model, "inner", None), BaseEmbedding):
        embed_model = embed_model.inner
    if isinstance(embed_model, OnnxEmbedding):
        tok = embed_model.chunk_tokenizer()
        specials = len(tok.encode("", add_special_tokens=True).ids)
        return (lambda text: tok.encode(text, add_special_tokens=False).ids), (
            embed_model.max_length - specials
        )
    if isinstance(embed_model, HuggingFaceEmbedding):
        from tokenizers import Tokenizer

        model = embed_model._model
        hf = model.tokenizer
        # An independent copy: fast tokenizers keep padding/truncation state, and ingest chunks
        # in one thread while the model tokenizes batches in another.
        own = Tokenizer.from_str(hf.backend_tokenizer.to_str())
        own.no_padding()
        own.no_truncation()

        def encode(text: str) -> list[int]:
            return own.encode(text, add_special_tokens=False).ids

        # The window counts the [CLS] and [SEP] the model adds around every text.
        specials = hf.num_special_tokens_to_add(pair=False)
        return encode, int(model.max_seq_length) - specials
    from llama_index.core.utils import get_tokenizer

    return get_tokenizer(), OPENAI_WINDOW


def _build_openai(cfg: EmbeddingSettings, cache_dir: Path | None) -> BaseEmbedding:
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
        embed_batch_size=batch_of(cfg),
    )


EMBEDDING_PROVIDERS: dict[str, Callable[[EmbeddingSettings, Path | None], BaseEmbedding]] = {
    "local": _build_local,
    "openai": _build_openai,
}


def _unknown(name: str) -> None:
    raise ConfigError(
        f"unknown embedding provider {name!r}; known: {', '.join(sorted(EMBEDDING_PROVIDERS))}"
    )


def build_embedding(cfg: EmbeddingSettings, cache_dir: Path | None = None) -> BaseEmbedding:
    """The embedding model the settings name; fails with the known names for an unknown one.
    `cache_dir` keeps the ONNX exports of local models (under the data directory). With a
    `query_adapter`, questions are embedded through it (passages are not)."""
    factory = EMBEDDING_PROVIDERS.get(cfg.provider)
    if factory is None:
        _unknown(cfg.provider)
    model = factory(cfg, cache_dir)
    if cfg.query_adapter is not None:
        from core.embedding.adapter import AdaptedEmbedding, load_adapter

        model = AdaptedEmbedding(model, load_adapter(Path(cfg.query_adapter)))
    return model


def model_key(cfg: EmbeddingSettings) -> str:
    """What tells two loaded query encoders apart: the embedding id (which names the passage
    vectors, so an adapter leaves it as it is) plus the query adapter's fingerprint."""
    key = embedding_id(cfg)
    if cfg.query_adapter is not None:
        from core.embedding.adapter import adapter_fingerprint

        key += f"+adapter:{adapter_fingerprint(Path(cfg.query_adapter))}"
    return key
