"""Opening the Chroma collection: embedded on disk by default, a `chroma run` server when a URL is
set. A collection remembers the embedding model that built it and refuses any other."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from core.errors import ConfigError, EmbeddingMismatchError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import EmbeddingSettings, Settings

EMBED_MODEL_KEY = "embed_model"
EMBED_DIM_KEY = "embed_dim"
# How widely a query searches Chroma's HNSW graph. At Chroma's default of 100, queries over the
# PostgreSQL manual (4,871 chunks) missed about one in 140 of their true 30 nearest chunks, some
# well inside the 30, and which ones changed from one process to the next, so the same question
# could be answered from other pages after a restart. At 400 none was missed and every run agreed
# (bench/NOTES.md); the search costs a few milliseconds more.
SEARCH_EF = 400

log = logging.getLogger(__name__)


def chroma_client(settings: Settings) -> ClientAPI:
    """A Chroma client for the configured store (server URL, else embedded directory)."""
    import chromadb
    from chromadb.config import Settings as ChromaConfig

    config = ChromaConfig(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma.url:
        url = urlparse(settings.chroma.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                f"RAG_CHROMA__URL={settings.chroma.url!r} is not an http(s) URL like "
                "http://127.0.0.1:8000"
            )
        try:
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=config,
            )
        except Exception as exc:  # chromadb raises plain ValueError/ConnectError on a dead server
            raise ConfigError(
                f"cannot reach the Chroma server at {settings.chroma.url}: {exc}; start it with "
                "`chroma run` or unset RAG_CHROMA__URL to use the embedded store"
            ) from exc
    path = settings.chroma_path
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=config)


def open_collection(
    client: ClientAPI, name: str, embed_model: str, create: bool = True
) -> Collection:
    """The named collection, created (cosine space) if missing and `create` is true.

    Raises EmbeddingMismatchError when it was built with another embedding model."""
    from chromadb.errors import InvalidArgumentError, NotFoundError

    if create:
        try:
            collection = client.get_or_create_collection(
                name,
                metadata={EMBED_MODEL_KEY: embed_model},
                configuration={"hnsw": {"space": "cosine", "ef_search": SEARCH_EF}},
                embedding_function=None,
            )
        except InvalidArgumentError as exc:
            raise ConfigError(
                f"{name!r} is not a valid collection name: use 3-512 letters, digits, '.', '_' "
                "or '-', starting and ending with a letter or digit (RAG_CHROMA__COLLECTION)"
            ) from exc
    else:
        try:
            collection = client.get_collection(name, embedding_function=None)
        except NotFoundError as exc:
            raise ConfigError(
                f"collection {name!r} does not exist yet; ingest documents first "
                "(python -m ingest docs/)"
            ) from exc
    _search_widely(collection)
    built_with = (collection.metadata or {}).get(EMBED_MODEL_KEY)
    if built_with and built_with != embed_model:
        raise EmbeddingMismatchError(
            f"collection {name!r} was built with embedding model {built_with!r}, but "
            f"{embed_model!r} is configured; set RAG_EMBEDDING__MODEL (and __BACKEND, "
            "__MAX_SEQ_LENGTH) back, or ingest into a new collection (RAG_CHROMA__COLLECTION=...) "
            "to re-index with the new model"
        )
    return collection


def _search_widely(collection: Collection) -> None:
    """Raise the collection's HNSW search breadth to SEARCH_EF (a collection made before it was
    set keeps Chroma's default otherwise). Chroma reads the breadth when a process first searches
    the collection, so this runs on open, before any query. A store that refuses the change still
    opens, with a warning: a narrower search misses a few passages, it does not fail."""
    try:
        hnsw = dict((collection.configuration or {}).get("hnsw") or {})
        if int(hnsw.get("ef_search") or 0) < SEARCH_EF:
            collection.modify(configuration={"hnsw": {"ef_search": SEARCH_EF}})
    except Exception as exc:  # an older server or a read-only store: search as it is
        log.warning("could not widen the search of %r: %s", collection.name, exc)


def built_with(client: ClientAPI, name: str) -> str | None:
    """The embedding id an existing collection was built with; None when there is none yet."""
    from chromadb.errors import NotFoundError

    try:
        collection = client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None
    return (collection.metadata or {}).get(EMBED_MODEL_KEY)


def index_embedding(settings: Settings, client=None) -> EmbeddingSettings:
    """The embedding settings that read the configured collection: the configured backend, else
    the one that built the collection (an index made before the default changed keeps its)."""
    from core.embedding.providers import resolve_backend

    client = client or chroma_client(settings)
    return resolve_backend(settings.embedding, built_with(client, settings.chroma.collection))


def open_index(settings: Settings, create: bool = True) -> tuple[Collection, BaseEmbedding]:
    """The configured collection and the embedding model that reads it (its backend following the
    collection's when none is configured)."""
    from core.embedding.providers import build_embedding, embedding_id

    client = chroma_client(settings)
    cfg = index_embedding(settings, client)
    embed_model = build_embedding(
        cfg, cache_dir=settings.embedding.cache_dir or settings.data_dir / "models"
    )
    collection = open_collection(client, settings.chroma.collection, embedding_id(cfg), create)
    return collection, embed_model


def record_dimension(collection: Collection, dim: int) -> None:
    """Remember the vector size on first write so a later mismatch is caught early."""
    meta: dict[str, Any] = dict(collection.metadata or {})
    if meta.get(EMBED_DIM_KEY) != dim:
        meta[EMBED_DIM_KEY] = dim
        meta.pop("hnsw:space", None)  # configuration owns the space; metadata may not repeat it
        collection.modify(metadata=meta)
