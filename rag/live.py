"""Answering with the registry's active versions, per request, without a restart: each question
checks the registry revision (one small query) and the pipeline is rebuilt only when it changed.
Also builds the pipeline of any given versions, for eval to answer with champion and candidate."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from core.compute import ComputeGate
from core.embedding.providers import build_embedding, embedding_id, model_key, resolve_backend
from core.index.store import built_with, chroma_client, open_collection
from core.registry import apply_spec
from rag.providers import build_chat_model
from rag.sentencestore import SentenceStore, store_path

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.chatlog import ChatLog
    from core.index.lexical import LexicalSource
    from core.prompting import SystemPrompt
    from core.registry import ModelVersion, Registry
    from core.settings import EmbeddingSettings, Settings
    from rag.pipeline import AnswerUpdate, RagPipeline
    from rag.rerank import Reranking
    from rag.retriever import SourceVectors
    from rag.synthesis import SentenceVectors

log = logging.getLogger(__name__)


class EmbeddingCache:
    """Embedding models by their id, their sentence caches, the lexical indexes by folder and the
    source vectors by collection, so switching versions never reloads what another version
    already loaded."""

    def __init__(self) -> None:
        self._models: dict[str, BaseEmbedding] = {}
        self._sentences: dict[str, SentenceVectors] = {}
        self._lexical: dict[str, LexicalSource] = {}
        self._source_vectors: dict[str, SourceVectors] = {}
        self._rerankers: dict[str, Reranking] = {}
        self._lock = threading.Lock()
        self.gate = ComputeGate()  # one per process: every pipeline's CPU work queues here

    @staticmethod
    def _resolved(settings: Settings, client=None) -> EmbeddingSettings:
        # The backend follows the collection's when none is configured (as core.index.store).
        client = client or chroma_client(settings)
        return resolve_backend(settings.embedding, built_with(client, settings.chroma.collection))

    def _model(self, cfg: EmbeddingSettings, settings: Settings) -> BaseEmbedding:
        key = model_key(cfg)
        with self._lock:
            if key not in self._models:
                cache_dir = settings.embedding.cache_dir or settings.data_dir / "models"
                self._models[key] = build_embedding(cfg, cache_dir=cache_dir)
            return self._models[key]

    def get(self, settings: Settings) -> BaseEmbedding:
        return self._model(self._resolved(settings), settings)

    def put(self, settings: Settings, model: BaseEmbedding) -> None:
        with self._lock:
            self._models[model_key(self._resolved(settings))] = model

    def sentence_vectors(self, settings: Settings) -> SentenceVectors:
        """One sentence-embedding cache per model, shared by every pipeline built on it."""
        from rag.synthesis import SentenceVectors

        cfg = self._resolved(settings)
        model = self._model(cfg, settings)
        key = model_key(cfg)
        with self._lock:
            if key not in self._sentences:
                # Passage sentences embed the same with or without a query adapter: one store
                # per model and backend.
                store_id = embedding_id(cfg)
                try:
                    store = SentenceStore(store_path(settings.data_dir, store_id), store_id)
                except (sqlite3.Error, OSError) as exc:  # answers work without it, only slower
                    log.warning("sentence vectors are not kept on disk: %s", exc)
                    store = None
                self._sentences[key] = SentenceVectors(model, store=store, gate=self.gate)
            return self._sentences[key]

    def open(self, settings: Settings, create: bool) -> tuple[Collection, BaseEmbedding]:
        """The collection the settings name and the embedding model that reads it."""
        client = chroma_client(settings)
        cfg = self._resolved(settings, client)
        model = self._model(cfg, settings)
        collection = open_collection(client, settings.chroma.collection, embedding_id(cfg), create)
        return collection, model

    def collection(self, settings: Settings, create: bool) -> Collection:
        """The collection the settings name, opened without loading its embedding model."""
        client = chroma_client(settings)
        cfg = self._resolved(settings, client)
        return open_collection(client, settings.chroma.collection, embedding_id(cfg), create)

    def lexical(self, settings: Settings, collection: Collection) -> LexicalSource:
        from core.index.lexical import LexicalSource, lexical_dir

        directory = lexical_dir(settings.data_dir, collection)
        with self._lock:
            source = self._lexical.get(str(directory))
            if source is None:
                source = self._lexical[str(directory)] = LexicalSource(collection, directory)
        source.get()  # load (or rebuild from Chroma) now rather than on the first question
        return source

    def reranking(self, settings: Settings) -> Reranking | None:
        """The reranker the settings name (None: none), loaded once per model and backend."""
        from rag.rerank import Reranking

        cfg = settings.reranker
        if cfg.model_dir is None:
            return None
        key = f"{cfg.model_dir.resolve()}|{cfg.backend}|{cfg.max_length}|{cfg.focus}"
        with self._lock:
            found = self._rerankers.get(key)
        if found is None:
            cache_dir = settings.embedding.cache_dir or settings.data_dir / "models"
            found = Reranking.from_settings(cfg, cache_dir, self.gate)
            with self._lock:
                found = self._rerankers.setdefault(key, found)
        # The model is shared; how its scores are used is this version's own.
        return Reranking(found.scorer, cfg.top_n, cfg.weight)

    def source_vectors(self, collection: Collection) -> SourceVectors:
        from rag.retriever import SourceVectors

        key = f"{collection.name}/{collection.id}"
        with self._lock:
            found = self._source_vectors.get(key)
            if found is None:
                found = self._source_vectors[key] = SourceVectors(collection)
            return found


def build_pipeline(
    settings: Settings,
    chat: ModelVersion | None,
    embedding: ModelVersion | None,
    chatlog: ChatLog | None,
    prompt: SystemPrompt,
    embeddings: EmbeddingCache,
    reranker: ModelVersion | None = None,
) -> RagPipeline:
    """A pipeline answering as the given versions (their specs over `settings`)."""
    # Imported here: llama-index and the embedding stack load only when a pipeline is built, so
    # the app can serve its page while they do.
    from rag.pipeline import RagPipeline

    applied = apply_spec(settings, chat, embedding, reranker)
    # A version that names its own collection must find it built (ingest's re-index makes it);
    # the settings' own collection is created on first start.
    own_collection = embedding is not None and "chroma" in embedding.spec
    collection, embed_model = embeddings.open(applied, create=not own_collection)
    lexical = embeddings.lexical(applied, collection) if applied.retrieval.hybrid else None
    pipeline = RagPipeline(
        collection,
        embed_model,
        build_chat_model(applied.llm),
        chatlog,
        prompt,
        applied.retrieval,
        lexical,
        gate=embeddings.gate,
    )
    pipeline.sentence_vectors = embeddings.sentence_vectors(applied)
    pipeline.retriever.source_vectors = embeddings.source_vectors(collection)
    pipeline.chat_version_id = chat.id if chat else None
    pipeline.embedding_version_id = embedding.id if embedding else None
    try:
        pipeline.retriever.reranking = embeddings.reranking(applied)
    except Exception:
        # Re-ranking improves answers; a reranker that cannot load (its folder gone) must not
        # stop them. Answered without it, and the turns say so (no reranker version).
        log.exception("reranker v%s cannot load; answering without it", reranker and reranker.id)
        pipeline.retriever.reranking = None
    # A reranker version that names no model (the seeded "none") re-ranks nothing: not named.
    pipeline.reranker_version_id = (
        reranker.id if reranker is not None and pipeline.retriever.reranking is not None else None
    )
    pipeline.reranker_seen_id = reranker.id if reranker is not None else None
    return pipeline


class LivePipeline:
    """The app's pipeline: always the active chat, embedding and reranker versions of the
    registry."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        chatlog: ChatLog | None,
        prompt: SystemPrompt,
        embeddings: EmbeddingCache | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.chatlog = chatlog
        self.prompt = prompt
        self.embeddings = embeddings or EmbeddingCache()
        self._lock = threading.Lock()
        self._revision: int | None = None
        self._pipeline: RagPipeline | None = None
        self._retires_on: str | None = None  # of the active chat version (an OpenAI fine-tune)
        self.rebuilds = 0

    @property
    def loaded(self) -> bool:
        """Whether the active versions' models are loaded (a first question would otherwise wait
        for them)."""
        return self._pipeline is not None

    def current(self) -> RagPipeline:
        """The pipeline of the active versions; rebuilt only when the registry revision moved."""
        revision = self.registry.revision()
        if revision == self._revision and self._pipeline is not None:
            return self._pipeline
        with self._lock:
            if revision == self._revision and self._pipeline is not None:
                return self._pipeline
            active = self.registry.active_all()
            chat, embedding = active["chat"], active["embedding"]
            reranker = active["reranker"]
            old = self._pipeline
            same = (
                old is not None
                and old.chat_version_id == (chat.id if chat else None)
                and old.embedding_version_id == (embedding.id if embedding else None)
                and old.reranker_seen_id == (reranker.id if reranker else None)
            )
            if not same:
                try:
                    self._pipeline = build_pipeline(
                        self.settings,
                        chat,
                        embedding,
                        self.chatlog,
                        self.prompt,
                        self.embeddings,
                        reranker,
                    )
                except Exception:
                    if old is None:
                        raise
                    # A promoted version that cannot be built (its collection is missing, its
                    # model directory gone) must not take the chat down: keep answering with the
                    # versions that work, and say so in the log; each turn records which answered.
                    log.exception(
                        "cannot build chat v%s / embedding v%s / reranker v%s; still answering "
                        "with %s",
                        chat.id if chat else None,
                        embedding.id if embedding else None,
                        reranker.id if reranker else None,
                        old.badge,
                    )
                    self._revision = revision
                    return old
                self.rebuilds += 1
                self._retires_on = (chat.provenance.get("retires_on") if chat else None) or None
                log.info("now answering with %s", self._pipeline.badge)
            self._revision = revision
            return self._pipeline

    def ask(
        self, session_id: str, question: str, history: Sequence[dict] = ()
    ) -> Iterator[AnswerUpdate]:
        """RagPipeline.ask on the active versions as of this question."""
        yield from self.current().ask(session_id, question, history)

    def active_collection(self) -> Collection:
        """The active versions' collection, opened without loading the embedding model (listing
        documents and the first screen need none); the built pipeline's when it is current."""
        pipeline = self._pipeline
        if pipeline is not None and self._revision == self.registry.revision():
            return pipeline.collection
        active = self.registry.active_all()
        embedding = active["embedding"]
        applied = apply_spec(self.settings, active["chat"], embedding)
        own_collection = embedding is not None and "chroma" in embedding.spec
        return self.embeddings.collection(applied, create=not own_collection)

    @property
    def badge(self) -> str:
        badge = self.current().badge
        from datetime import UTC, datetime

        from core.dates import retirement_warning

        warning = retirement_warning(self._retires_on, datetime.now(UTC).date())
        return f"{badge} · {warning}" if warning else badge

    @property
    def chat_model(self):
        return self.current().chat_model

    @property
    def collection(self):
        return self.current().collection

    @property
    def embed_model(self):
        return self.current().embed_model
