"""Retrieval over the Chroma collection as a LlamaIndex retriever: dense search by cosine similarity
(the stock Chroma store reports exp(-distance), which is not a similarity a cutoff can be set on),
fused with lexical BM25 search (hybrid, on by default) and with each source's similarity as a
whole, at most a few passages per source."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from core.index.chunks import Meta, build_of, chunk_id, embed_text, readable
from core.records import SourceRef

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.index.lexical import LexicalSource
    from core.settings import RetrievalSettings
    from rag.rerank import Reranking

log = logging.getLogger(__name__)


@dataclass
class _Candidate:
    chunk_id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None
    cosine: float | None = None
    dense_rank: int | None = None
    lexical_rank: int | None = None
    lexical_score: float = 0.0
    rare: bool = False
    # The meaning-based score ranked on: the cosine, mixed with the source's (source_weight).
    dense: float = 0.0
    fused: float = 0.0
    rerank_score: float | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


Build = tuple[str, str]  # (source key, ingest key): one build of one source
# On a retrieved node's metadata (never stored): it holds a rare word of the question.
RARE_WORDS = "matched_rare_words"


class SourceVectors:
    """The sum of each source's passage vectors, per build, read from Chroma by chunk id on first
    need and kept in memory up to a byte budget (oldest dropped first). A changed source is
    re-ingested under a new ingest key, so an entry never goes stale; a build found incomplete
    (an ingest under way, or one killed between writes) is used for that question only and read
    again next time. One per collection, shared by the pipelines built on it."""

    MAX_BYTES = 64 * 2**20
    GET_BATCH = 500  # chunk ids per Chroma request

    def __init__(self, collection: Collection):
        self.collection = collection
        self._sums: OrderedDict[Build, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def sums(self, builds: dict[Build, int]) -> dict[Build, np.ndarray]:
        """Vector sums of the given builds (each with its chunk count); a build none of whose
        chunks is found is left out."""
        found: dict[Build, np.ndarray] = {}
        wanted: dict[str, Build] = {}
        with self._lock:
            for build, n in builds.items():
                if build in self._sums:
                    self._sums.move_to_end(build)
                    found[build] = self._sums[build]
                else:
                    wanted.update({chunk_id(*build, i): build for i in range(n)})
        totals: dict[Build, np.ndarray] = {}
        counts: dict[Build, int] = {}
        ids = list(wanted)
        for start in range(0, len(ids), self.GET_BATCH):
            got = self.collection.get(
                ids=ids[start : start + self.GET_BATCH], include=["embeddings"]
            )
            for cid, vector in zip(got["ids"], got["embeddings"], strict=True):
                build = wanted[cid]
                v = np.asarray(vector, np.float32)
                totals[build] = totals[build] + v if build in totals else v.copy()
                counts[build] = counts.get(build, 0) + 1
        with self._lock:
            for build, total in totals.items():
                if counts[build] == builds[build] and build not in self._sums:
                    self._sums[build] = total
                    self._bytes += total.nbytes
            while self._bytes > self.MAX_BYTES and self._sums:
                self._bytes -= self._sums.popitem(last=False)[1].nbytes
        return found | totals


class HybridRetriever(BaseRetriever):
    """Dense (Chroma, cosine) and, when a lexical source is given, BM25 candidates fused by
    reciprocal rank or a weighted score sum. The dense side ranks each passage by its cosine
    mixed with that of its whole source (the mean of the source's passage vectors). Each passage
    is scored by its own cosine similarity to the question (what the user sees), ordered by the
    fused rank."""

    def __init__(
        self,
        collection: Collection,
        embed_model: BaseEmbedding,
        settings: RetrievalSettings,
        lexical: LexicalSource | None = None,
        source_vectors: SourceVectors | None = None,
    ):
        super().__init__()
        self.collection = collection
        self.embed_model = embed_model
        self.settings = settings
        self.lexical = lexical if settings.hybrid else None
        self.source_vectors = source_vectors or SourceVectors(collection)
        self.reranking: Reranking | None = None  # a cross-encoder re-scoring the best candidates

    def _dense(self, embedding: list[float], n: int) -> dict[str, _Candidate]:
        res = self.collection.query(
            query_embeddings=[embedding],
            n_results=n,
            include=["documents", "metadatas", "distances"],
        )
        found: dict[str, _Candidate] = {}
        for rank, (cid, text, meta, dist) in enumerate(
            zip(
                res["ids"][0],
                res["documents"][0],
                res["metadatas"][0],
                res["distances"][0],
                strict=True,
            )
        ):
            found[cid] = _Candidate(cid, text, dict(meta or {}), 1.0 - float(dist), rank)
        return found

    def best_passage(self, embedding: list[float]) -> tuple[float, np.ndarray] | None:
        """(cosine similarity, stored vector) of the passage closest to `embedding`; None for an
        empty index."""
        if self.collection.count() == 0:
            return None
        res = self.collection.query(
            query_embeddings=[embedding], n_results=1, include=["distances", "embeddings"]
        )
        if not res["ids"][0]:
            return None
        return 1.0 - float(res["distances"][0][0]), np.asarray(res["embeddings"][0][0], np.float32)

    def _mix_sources(self, candidates: list[_Candidate], query: np.ndarray) -> None:
        """Mix each passage's cosine with its whole source's: the cosine to the mean of all the
        source's passage vectors. A page every passage of which is about the topic gains on a
        long page of other topics that mentions it once (evidence from the whole document and
        from its best passage rank documents better together than either alone). A one-passage
        source keeps its cosine. Left as it is when any candidate's source cannot be read whole
        (passages written by another tool), so that all are ranked on the same scale."""
        builds: dict[Build, int] = {}
        of: dict[str, Build] = {}
        for c in candidates:
            found = build_of(c.metadata)
            if found is None:
                return
            source_key, ingest_key, index, n = found
            build = (source_key, ingest_key)
            if chunk_id(*build, index) != c.chunk_id:
                return
            builds[build], of[c.chunk_id] = n, build
        sums = self.source_vectors.sums(builds)
        if len(sums) < len(builds):
            return
        similarity = {build: cosine(total, query) for build, total in sums.items()}
        weight = self.settings.source_weight
        for c in candidates:
            c.dense = (1 - weight) * c.dense + weight * similarity[of[c.chunk_id]]

    def _fuse(self, candidates: list[_Candidate]) -> list[_Candidate]:
        s = self.settings
        if self.lexical is None:
            for c in candidates:
                c.fused = c.dense
        elif s.fusion == "rrf":
            dense_order = sorted(
                (c for c in candidates if c.dense_rank is not None), key=lambda c: -c.dense
            )
            for rank, c in enumerate(dense_order):
                c.dense_rank = rank
            for c in candidates:
                c.fused = sum(
                    1.0 / (s.rrf_k + r + 1) for r in (c.dense_rank, c.lexical_rank) if r is not None
                )
        else:
            top_lex = max((c.lexical_score for c in candidates), default=0.0) or 1.0
            lo = min((c.dense for c in candidates), default=0.0)
            hi = max((c.dense for c in candidates), default=1.0)
            for c in candidates:
                dense = (c.dense - lo) / (hi - lo or 1.0)
                lexical = c.lexical_score / top_lex
                c.fused = (1 - s.lexical_weight) * dense + s.lexical_weight * lexical
        return sorted(candidates, key=lambda c: -c.fused)

    def ranked(
        self, query_str: str, embedding: list[float], k: int | None = None
    ) -> list[_Candidate]:
        """Passages for the question, best first, cut off and capped per source."""
        s = self.settings
        k = k or s.top_k
        n = max(s.candidates, k)
        query = np.asarray(embedding, np.float32)
        candidates = self._dense(embedding, n)
        if self.lexical is not None:
            for rank, hit in enumerate(self.lexical.get().search(query_str, n)):
                c = candidates.setdefault(hit.chunk_id, _Candidate(hit.chunk_id))
                c.lexical_rank, c.lexical_score, c.rare = rank, hit.score, hit.rare
            missing = [c.chunk_id for c in candidates.values() if c.text is None]
            if missing:
                self._fill(candidates, missing, query)
        # A lexical hit without text is gone from Chroma since the lexical index was read.
        present = [c for c in candidates.values() if c.text is not None]
        for c in present:
            c.dense = c.cosine or 0.0
        if s.source_weight and present:
            self._mix_sources(present, query)
        ranked = self._fuse(present)
        kept = [
            c
            for c in ranked
            if (s.similarity_cutoff is None or (c.cosine or 0.0) >= s.similarity_cutoff or c.rare)
        ]
        if self.reranking is not None and len(kept) > 1:
            try:
                self._rerank(query_str, kept)
            except Exception:  # re-ranking is an improvement, never a reason to fail a question
                log.exception("the reranker failed; answering in the retrieval order")
                for c in kept:
                    c.rerank_score = None
            else:
                kept.sort(key=lambda c: -c.fused)
        return self._by_source(kept, k)

    def _rerank(self, query_str: str, kept: list[_Candidate]) -> None:
        """The best `top_n` candidates re-scored by the cross-encoder, mixed with their fused
        score (both scaled 0..1 over them), then placed in 1..2; the rest keep their order in
        0..1 below them. Every score stays positive, as sources are ranked on their sums."""
        from rag.rerank import mix, scaled

        assert self.reranking is not None
        head = kept[: self.reranking.top_n]
        # Read as it was trained and as the embedding model reads it: heading path, then text.
        texts = [
            embed_text(str((c.metadata or {}).get(Meta.HEADING_PATH) or ""), c.text or "")
            for c in head
        ]
        scores = self.reranking.scorer.score(query_str, texts)
        new = 1.0 + mix([c.fused for c in head], scores, self.reranking.weight)
        tail = kept[len(head) :]
        rest = 0.999 * scaled(np.asarray([c.fused for c in tail])) if tail else []
        for c, score, value in zip(head, scores, new, strict=True):
            c.rerank_score, c.fused = float(score), float(value)
        for c, value in zip(tail, rest, strict=True):
            c.fused = float(value)

    def _by_source(self, ranked: list[_Candidate], k: int) -> list[_Candidate]:
        """Sources ranked by their best passage plus a share of their next best ones (a page
        several of whose passages match is more likely the page than one lucky sentence);
        each source's passages follow in their own order, at most `max_per_source` of them."""
        s = self.settings
        groups: dict[str, list[_Candidate]] = {}
        for c in ranked:
            meta = c.metadata or {}
            groups.setdefault(str(meta.get(Meta.SOURCE_KEY) or meta.get(Meta.SOURCE)), []).append(c)
        for group in groups.values():
            group.sort(key=lambda c: -c.fused)

        def strength(group: list[_Candidate]) -> float:
            best, *others = _separate(group)
            return best.fused + s.source_bonus * sum(c.fused for c in others[: s.source_pool - 1])

        order = sorted(groups.values(), key=lambda g: -strength(g))
        out: list[_Candidate] = []
        for group in order:
            out.extend(group[: s.max_per_source] if s.max_per_source else group)
            if len(out) >= k:
                break
        return out[:k]

    def _fill(self, candidates: dict[str, _Candidate], ids: list[str], query: np.ndarray) -> None:
        got = self.collection.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        for cid, text, meta, vector in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        ):
            c = candidates[cid]
            c.text, c.metadata = text, dict(meta or {})
            c.cosine = cosine(np.asarray(vector, np.float32), query)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        embedding = query_bundle.embedding or self.embed_model.get_query_embedding(
            query_bundle.query_str
        )
        nodes = []
        for c in self.ranked(query_bundle.query_str, embedding):
            meta = dict(c.metadata or {})
            if c.rare:
                meta[RARE_WORDS] = True
            node = TextNode(
                id_=c.chunk_id,
                text=readable(c.text or "", meta),
                metadata=meta,
                # only the passage text goes to the model; metadata is shown as citations
                excluded_llm_metadata_keys=list(meta),
                excluded_embed_metadata_keys=list(meta),
            )
            nodes.append(NodeWithScore(node=node, score=c.cosine))
        return nodes


def _separate(group: list[_Candidate]) -> list[_Candidate]:
    """A source's passages, best first, that are evidence of their own. A passage next to
    another matching passage of the same section (chunk indexes one apart, same heading path)
    continues the same text, cut there by the splitter and sharing its overlap, so a run of
    consecutive matching passages counts once: counting each would reward a document for its
    length and for where the splitter cut it, not for a second place that matches. A passage
    without a chunk index (written by another tool) is counted."""
    seen: list[tuple[int, Any]] = []
    out = []
    for c in group:
        meta = c.metadata or {}
        try:
            index = int(meta[Meta.CHUNK_INDEX])
        except (KeyError, TypeError, ValueError):
            out.append(c)
            continue
        section = meta.get(Meta.HEADING_PATH)
        if all(abs(index - i) > 1 or s != section for i, s in seen):
            out.append(c)
        seen.append((index, section))
    return out


def to_source(node: NodeWithScore) -> SourceRef:
    meta: dict[str, Any] = node.node.metadata
    page = meta.get(Meta.PAGE)
    return SourceRef(
        chunk_id=node.node.node_id,
        source=str(meta.get(Meta.SOURCE, "")),
        file_name=meta.get(Meta.FILE_NAME),
        page=int(page) if page is not None else None,
        title=meta.get(Meta.TITLE),
        heading_path=meta.get(Meta.HEADING_PATH),
        score=round(float(node.score or 0.0), 4),
        rare_words=bool(meta.get(RARE_WORDS)),
        text=node.node.get_content(),
    )
