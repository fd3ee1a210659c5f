"""Held-out retrieval evaluation of embedding models: hit@1/5/10, MRR@10 and NDCG@10 of a model
(optionally with its query adapter) over a corpus, and the split that keeps evaluation questions
out of training."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from finetune.embedding.data import PairSet

KS = (1, 5, 10)
METRICS = ("hit_at_1", "hit_at_5", "hit_at_10", "mrr_at_10", "ndcg_at_10")


def retrieval_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict:
    """Mean hit@1/5/10, MRR@10 and NDCG@10 (binary relevance) of ranked id lists."""
    if not ranked:
        raise ValueError("no queries to score")
    sums = dict.fromkeys(METRICS, 0.0)
    for ids, rel in zip(ranked, relevant, strict=True):
        for k in KS:
            sums[f"hit_at_{k}"] += float(any(d in rel for d in ids[:k]))
        for rank, d in enumerate(ids[:10], start=1):
            if d in rel:
                sums["mrr_at_10"] += 1.0 / rank
                break
        dcg = sum(1.0 / math.log2(r + 1) for r, d in enumerate(ids[:10], start=1) if d in rel)
        ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(rel), 10) + 1))
        sums["ndcg_at_10"] += dcg / ideal if ideal else 0.0
    return {m: v / len(ranked) for m, v in sums.items()}


Encoder = Callable[[list[str]], np.ndarray]


def rank_corpus(
    data: PairSet, encode_queries: Encoder, encode_docs: Encoder, depth: int = 10
) -> list[list[str]]:
    """For each query of `data` (in order), the `depth` corpus ids closest by cosine."""
    doc_ids = list(data.corpus)
    docs = _normalise(encode_docs([data.corpus[d] for d in doc_ids]))
    queries = _normalise(encode_queries(list(data.queries.values())))
    scores = queries @ docs.T
    depth = min(depth, len(doc_ids))
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    out = []
    for row, cand in zip(scores, top, strict=True):
        order = cand[np.argsort(-row[cand], kind="stable")]
        out.append([doc_ids[i] for i in order])
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def evaluate_model(
    data: PairSet,
    model,
    adapter=None,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, float]:
    """Retrieval metrics of a SentenceTransformer (and optional QueryAdapter) on `data`."""

    def docs(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, show_progress_bar=progress)

    def queries(texts: list[str]) -> np.ndarray:
        vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
        return adapter.apply(vecs) if adapter is not None else vecs

    ranked = rank_corpus(data, queries, docs)
    relevant = [set(data.relevant_docs[q]) for q in data.queries]
    return retrieval_metrics(ranked, relevant)


def holdout_split(
    data: PairSet, share: float = 0.2, seed: int = 0, by_doc: bool = True
) -> tuple[list[str], list[str]]:
    """(train, held-out) query ids. With `by_doc`, queries about one passage stay on one side, so
    a held-out question is never a paraphrase of a training question about the same text."""
    rng = random.Random(seed)
    if not by_doc:
        qids = sorted(data.queries)
        rng.shuffle(qids)
        cut = max(1, round(len(qids) * share))
        return qids[cut:], qids[:cut]
    groups: dict[str, list[str]] = {}
    for qid in sorted(data.queries):
        groups.setdefault(data.relevant_docs[qid][0], []).append(qid)
    keys = sorted(groups)
    rng.shuffle(keys)
    held, train = [], []
    target = max(1, round(len(data.queries) * share))
    for key in keys:
        (held if len(held) < target else train).extend(groups[key])
    return train, held
