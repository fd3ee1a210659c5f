"""A LlamaIndex retriever straight over the Chroma collection, scoring by cosine similarity (the
stock Chroma store reports exp(-distance), which is not a similarity a cutoff can be set on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from core.records import SourceRef

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding


class ChromaRetriever(BaseRetriever):
    def __init__(
        self,
        collection: Collection,
        embed_model: BaseEmbedding,
        top_k: int,
        similarity_cutoff: float | None = None,
    ):
        super().__init__()
        self.collection = collection
        self.embed_model = embed_model
        self.top_k = top_k
        self.similarity_cutoff = similarity_cutoff

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        embedding = query_bundle.embedding or self.embed_model.get_query_embedding(
            query_bundle.query_str
        )
        res = self.collection.query(
            query_embeddings=[embedding],
            n_results=self.top_k,
            include=["documents", "metadatas", "distances"],
        )
        nodes = []
        for cid, text, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,
        ):
            score = 1.0 - float(dist)
            if self.similarity_cutoff is not None and score < self.similarity_cutoff:
                continue
            meta = dict(meta or {})
            node = TextNode(
                id_=cid,
                text=text,
                metadata=meta,
                # only the passage text goes to the model; metadata is shown as citations
                excluded_llm_metadata_keys=list(meta),
                excluded_embed_metadata_keys=list(meta),
            )
            nodes.append(NodeWithScore(node=node, score=score))
        return nodes


def to_source(node: NodeWithScore) -> SourceRef:
    meta: dict[str, Any] = node.node.metadata
    page = meta.get("page")
    return SourceRef(
        chunk_id=node.node.node_id,
        source=str(meta.get("source", "")),
        file_name=meta.get("file_name"),
        page=int(page) if page is not None else None,
        title=meta.get("title"),
        score=round(float(node.score or 0.0), 4),
        text=node.node.get_content(),
    )
