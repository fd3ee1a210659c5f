"""Hard negatives for reranker training. A reranker re-orders what the app's retriever found, so
its negatives are what that retriever ranks high for each question and is not the answer: asked
through the active versions' retriever (hybrid search over the active collection). Questions
whose passages are not in the collection (pairs from a file or a dataset) get negatives mined
among the pairs' own passages with the embedding model; passages of answers rated down in the
chat log are added as negatives of the same question when it has a positive."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from core.index.chunks import Meta, embed_text
from core.questions import question_key

if TYPE_CHECKING:
    from core.registry import Registry
    from core.settings import Settings
    from finetune.embedding.data import PairSet

log = logging.getLogger(__name__)

DEPTH = 20  # retrieved candidates per question among which negatives are taken


def _source_chunk(doc_id: str) -> str:
    """The collection chunk a positive stands for: an inverse-cloze positive is its chunk less a
    sentence (`cloze:<chunk id>:<n>`); other positives are chunks by their own id."""
    if doc_id.startswith("cloze:"):
        return doc_id.split(":", 1)[1].rsplit(":", 1)[0]
    return doc_id


def add_negatives(
    settings: Settings,
    registry: Registry,
    data: PairSet,
    n: int,
    seed: int = 0,
    chatlog=None,
) -> dict[str, int]:
    """Fill `data.negatives` with `n` hard negatives per question (see the module docstring);
    returns how many questions got them from each source."""
    from rag.live import EmbeddingCache, build_pipeline
    from rag.prompt import system_prompt

    rng = random.Random(seed)
    counts = {"retrieved": 0, "mined": 0, "rated_down": 0, "random": 0}
    active = registry.active_all()
    # The active chat and embedding versions, without a reranker: the order it will re-rank.
    pipeline = build_pipeline(
        settings, active["chat"], active["embedding"], None, system_prompt(settings),
        EmbeddingCache(),
    )  # fmt: skip
    retriever = pipeline.retriever
    in_collection: set[str] = set()
    wanted = sorted({_source_chunk(d) for docs in data.relevant_docs.values() for d in docs})
    for start in range(0, len(wanted), 500):
        got = pipeline.collection.get(ids=wanted[start : start + 500], include=[])
        in_collection.update(got["ids"])
    unplaced = []
    for qid, query in data.queries.items():
        positives = {_source_chunk(d) for d in data.relevant_docs[qid]}
        if not positives & in_collection:
            unplaced.append(qid)
            continue
        own_texts = {data.corpus[d] for d in data.relevant_docs[qid]}
        embedding = pipeline.embed_model.get_query_embedding(query)
        found = []
        for c in retriever.ranked(query, embedding, k=DEPTH):
            text = embed_text(str((c.metadata or {}).get(Meta.HEADING_PATH) or ""), c.text or "")
            if c.chunk_id in positives or text in own_texts:
                continue
            doc_id = f"negative:{c.chunk_id}"
            data.corpus[doc_id] = text
            found.append(doc_id)
            if len(found) == n:
                break
        if len(found) < n:  # a tiny collection: fill up at random from the pairs' passages
            others = [d for d in data.corpus if d not in data.relevant_docs[qid]]
            found += rng.sample(others, min(n - len(found), len(others)))
            counts["random"] += 1
        data.negatives[qid] = found[:n]
        counts["retrieved"] += 1
    if unplaced:
        counts["mined"] = _mine(data, unplaced, n, pipeline.embed_model, rng)
    if chatlog is not None:
        counts["rated_down"] = _rated_down(data, chatlog, pipeline.collection)
    return counts


def _mine(data: PairSet, qids: list[str], n: int, embed_model, rng: random.Random) -> int:
    """Negatives for questions whose passages are not in the collection: the pairs' other
    passages the embedding model ranks closest to the question."""
    import numpy as np

    ids = list(data.corpus)
    vectors = np.asarray(embed_model.get_text_embedding_batch([data.corpus[d] for d in ids]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    for qid in qids:
        query = np.asarray(embed_model.get_query_embedding(data.queries[qid]))
        order = np.argsort(-(vectors @ query))
        relevant = set(data.relevant_docs[qid])
        texts = {data.corpus[d] for d in relevant}
        picked = [
            ids[i] for i in order if ids[i] not in relevant and data.corpus[ids[i]] not in texts
        ]
        data.negatives[qid] = picked[:n] if len(picked) >= n else rng.sample(ids, n)
    return len(qids)


def _rated_down(data: PairSet, chatlog, collection) -> int:
    """The passages answers rated down cited, as negatives of the same question (by its
    normalised text) where that question has a positive; returns how many were added."""
    from finetune.embedding.data import chunk_text, cited_chunks

    by_key: dict[str, list[str]] = {}
    for qid, query in data.queries.items():
        by_key.setdefault(question_key(query), []).append(qid)
    added = 0
    for turn in chatlog.turns(feedback="down"):
        qids = by_key.get(question_key(turn.user_input))
        cited = cited_chunks(turn.response, turn.retrieved_contexts) if qids else []
        if not cited:
            continue
        got = collection.get(ids=cited, include=["documents", "metadatas"])
        for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            for qid in qids:
                if cid in data.relevant_docs[qid] or not doc:
                    continue
                doc_id = f"negative:{cid}"
                data.corpus[doc_id] = chunk_text(doc, meta)
                # In the place of the weakest retrieved one: the rating says it is wrong.
                negatives = data.negatives.setdefault(qid, [])
                if doc_id not in negatives:
                    negatives[-1:] = [doc_id]
                    added += 1
    return added
