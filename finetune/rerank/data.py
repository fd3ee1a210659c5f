"""Hard negatives for reranker training. A reranker re-orders what the app's retriever found, so
its negatives are what that retriever ranks high for each question and is not the answer: asked
through the active chat and embedding versions' retriever (hybrid search over the active
collection), never re-ranked. A passage that holds the question's own text (the chunk an
inverse-cloze sentence came from, or its neighbour sharing the overlap) is not a negative, nor
is a passage shown with an answer rated up (any of them may be what helped).
Questions whose passages are not in the collection (pairs from a file or a dataset) get
negatives mined among the pairs' own passages with the embedding model; a passage an answer
cited that was rated down in the chat log replaces the weakest retrieved negative of the same
question. Every question ends with exactly `n` negatives (the listwise loss needs as many for
each), or the set is refused with the reason."""

from __future__ import annotations

import logging
import random
import re
from typing import TYPE_CHECKING

from core.errors import RagError
from core.index.chunks import Meta, embed_text
from core.questions import question_key

if TYPE_CHECKING:
    from core.chatlog import ChatLog
    from core.compute import ComputeGate
    from core.registry import Registry
    from core.settings import Settings
    from finetune.embedding.data import PairSet
    from rag.live import EmbeddingCache

log = logging.getLogger(__name__)

DEPTH = 20  # retrieved candidates per question among which negatives are taken


def _source_chunk(doc_id: str) -> str:
    """The collection chunk a pair's text stands for: an inverse-cloze positive is its chunk less
    a sentence (`cloze:<chunk id>:<n>`), a retrieved negative `negative:<chunk id>`; other texts
    are chunks by their own id."""
    if doc_id.startswith("cloze:"):
        return doc_id.split(":", 1)[1].rsplit(":", 1)[0]
    if doc_id.startswith("negative:"):
        return doc_id.split(":", 1)[1]
    return doc_id


def _plain(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def add_negatives(
    settings: Settings,
    registry: Registry,
    data: PairSet,
    n: int,
    seed: int = 0,
    chatlog: ChatLog | None = None,
    embeddings: EmbeddingCache | None = None,
    gate: ComputeGate | None = None,
) -> dict[str, int]:
    """Fill `data.negatives` with `n` hard negatives per question (see the module docstring);
    returns how many questions got them from each source. With the `gate` of a process that
    answers questions too (the app), each question's search takes its turn there."""
    from contextlib import nullcontext

    from rag.live import EmbeddingCache, build_pipeline
    from rag.prompt import system_prompt

    rng = random.Random(seed)
    counts = {"retrieved": 0, "mined": 0, "rated_down": 0, "random": 0}
    active = registry.active_all()
    pipeline = build_pipeline(
        settings, active["chat"], active["embedding"], None, system_prompt(settings),
        embeddings or EmbeddingCache(),
    )  # fmt: skip
    retriever = pipeline.retriever
    retriever.reranking = None  # the order a reranker will re-rank, not a re-ranked one
    in_collection: set[str] = set()
    wanted = sorted({_source_chunk(d) for docs in data.relevant_docs.values() for d in docs})
    for start in range(0, len(wanted), 500):
        got = pipeline.collection.get(ids=wanted[start : start + 500], include=[])
        in_collection.update(got["ids"])
    unplaced = []
    for qid, query in list(data.queries.items()):
        positives = {_source_chunk(d) for d in data.relevant_docs[qid]}
        if not positives & in_collection:
            unplaced.append(qid)
            continue
        # Passages shown with a rated-up answer may be what helped: never its negatives.
        kept_out = positives | set(data.shown.get(qid, []))
        own_texts = {_plain(data.corpus[d]) for d in data.relevant_docs[qid]}
        asked = _plain(query)
        with gate.hold() if gate is not None else nullcontext():
            embedding = pipeline.embed_model.get_query_embedding(query)
            ranked = retriever.ranked(query, embedding, k=DEPTH)
        found: list[str] = []
        for c in ranked:
            text = embed_text(str((c.metadata or {}).get(Meta.HEADING_PATH) or ""), c.text or "")
            plain = _plain(text)
            if c.chunk_id in kept_out or plain in own_texts or (asked and asked in plain):
                continue
            doc_id = f"negative:{c.chunk_id}"
            data.corpus[doc_id] = text
            found.append(doc_id)
            if len(found) == n:
                break
        if len(found) < n:  # a tiny collection: fill up at random from the pairs' passages
            found += _random_others(data, qid, found, n - len(found), rng)
            counts["random"] += 1
        data.negatives[qid] = found
        counts["retrieved"] += 1
    if unplaced:
        counts["mined"] = _mine(data, unplaced, n, pipeline.embed_model, rng)
    if chatlog is not None:
        counts["rated_down"] = _rated_down(data, chatlog, pipeline.collection)
    short = [qid for qid in data.queries if len(data.negatives.get(qid, ())) < n]
    if short:
        raise RagError(
            f"{len(short)} question(s) have fewer than {n} passages that are not their answer; "
            "ask for fewer negatives or add documents"
        )
    return counts


def _random_others(
    data: PairSet, qid: str, taken: list[str], k: int, rng: random.Random
) -> list[str]:
    """`k` passages of the pairs drawn at random that are neither the question's answer (nor a
    text of its chunk) nor already taken; fewer when there are not so many."""
    mine = {_source_chunk(d) for d in data.relevant_docs[qid]}
    others = [
        d
        for d in data.corpus
        if d not in taken and _source_chunk(d) not in mine and d not in data.relevant_docs[qid]
    ]
    return rng.sample(others, min(k, len(others)))


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
        mine = {_source_chunk(d) for d in data.relevant_docs[qid]}
        texts = {data.corpus[d] for d in data.relevant_docs[qid]}
        picked = [
            ids[i]
            for i in order
            if _source_chunk(ids[i]) not in mine and data.corpus[ids[i]] not in texts
        ][:n]
        if len(picked) < n:
            picked += _random_others(data, qid, picked, n - len(picked), rng)
        data.negatives[qid] = picked
    return len(qids)


def _rated_down(data: PairSet, chatlog: ChatLog, collection) -> int:
    """The passages answers rated down cited, each in the place of the weakest retrieved negative
    of the same question (by its normalised text) where that question is in the set; returns how
    many were placed."""
    from finetune.embedding.data import chunk_text, cited_chunks

    by_key: dict[str, list[str]] = {}
    for qid, query in data.queries.items():
        by_key.setdefault(question_key(query), []).append(qid)
    placed: dict[str, set[str]] = {}  # question -> the rated-down negatives placed for it
    for turn in chatlog.turns(feedback="down"):
        qids = by_key.get(question_key(turn.user_input))
        cited = cited_chunks(turn.response, turn.retrieved_contexts) if qids else []
        if not cited:
            continue
        got = collection.get(ids=cited, include=["documents", "metadatas"])
        for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            for qid in qids or []:
                negatives = data.negatives.get(qid, [])
                mine = {_source_chunk(d) for d in data.relevant_docs[qid]}
                doc_id = f"negative:{cid}"
                if not doc or cid in mine or doc_id in negatives:
                    continue
                done = placed.setdefault(qid, set())
                # The weakest negative that is not a rated-down one already, from the end.
                slots = [i for i in range(len(negatives)) if negatives[i] not in done]
                if not slots:
                    continue
                data.corpus[doc_id] = chunk_text(doc, meta)
                negatives[slots[-1]] = doc_id
                done.add(doc_id)
    return sum(len(v) for v in placed.values())
