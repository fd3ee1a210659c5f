"""Offline metrics, needing no LLM: Ragas' non-LLM context precision/recall, ROUGE-L and string
similarity; whether the answer contains the reference; semantic similarity with the local
embedding model; source-level retrieval hit@1/5/10, MRR@10 and NDCG@10. A metric that cannot be
measured on a sample is NaN with its reason, never a made-up number."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from core.evalstore import NO_GOLD, NO_REFERENCE, EvalSample, ScoredSample
from rag.synthesis import EXTRACTIVE_LABEL, NOT_MENTIONED

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

NAN = math.nan
RETRIEVAL_METRICS = ("hit_at_1", "hit_at_5", "hit_at_10", "mrr_at_10", "ndcg_at_10")
OFFLINE_METRICS = (
    "context_precision",
    "context_recall",
    "rouge_l",
    "string_similarity",
    "answer_contains_reference",
    "semantic_similarity",
    *RETRIEVAL_METRICS,
)
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_MISSING = re.compile(
    "^_" + re.escape(NOT_MENTIONED).replace(re.escape("{names}"), ".*?") + "_$", re.MULTILINE
)


def answer_text(response: str | None) -> str:
    """The answer's content: the extractive label, quote markers and [n] citations removed, so
    that a quoted sentence scores as what it says. References get the same treatment: one taken
    from a rated answer in the chat log carries the same marks, and an answer identical to it must
    score as identical."""
    text = response or ""
    if text.startswith(EXTRACTIVE_LABEL):
        text = text[len(EXTRACTIVE_LABEL) :].lstrip(":").strip()
        text = _MISSING.sub("", text)  # a note on the quotes, not what they say
    text = _QUOTE.sub("", _CITATION.sub("", text))
    return " ".join(text.split())


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def contains_reference(response: str, reference: str) -> float:
    """1.0 when the normalised reference occurs in the normalised answer."""
    ref = _norm(reference)
    return float(bool(ref) and f" {ref} " in f" {_norm(response)} ")


def _same_source(retrieved: str, gold: str) -> bool:
    # Gold sources are file names or paths relative to the ingest root; retrieved are absolute.
    r, g = PurePosixPath(retrieved.replace("\\", "/")), PurePosixPath(gold.replace("\\", "/"))
    return r == g or r.parts[-len(g.parts) :] == g.parts


def _same_passage(retrieved: str, gold: str) -> bool:
    # A chunk may be part of a long gold passage, or hold a short one.
    r, g = _norm(retrieved), _norm(gold)
    return bool(r and g) and (g in r or r in g)


def relevance(sample: EvalSample, contexts: Sequence[str], sources: Sequence[str]) -> list[int]:
    """0/1 per retrieved passage: from gold sources when the sample has them, else gold passages.
    A gold item counts once (the first passage that matches it)."""
    found: list[int] = []
    used: set[int] = set()
    for text, source in zip(contexts, sources, strict=True):
        hit = 0
        if sample.reference_sources:
            golds = sample.reference_sources
            match = [i for i, g in enumerate(golds) if _same_source(source, g)]
        else:
            golds = sample.reference_contexts
            match = [i for i, g in enumerate(golds) if _same_passage(text, g)]
        fresh = [i for i in match if i not in used]
        if fresh:
            hit = 1
            used.add(fresh[0])
        found.append(hit)
    return found


def retrieval_scores(rel: list[int], n_gold: int) -> dict[str, float]:
    """hit@k, MRR@10 and NDCG@10 (binary gains) of one ranked list with `n_gold` gold items."""
    first = next((i for i, r in enumerate(rel[:10]) if r), None)
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel[:10]))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(n_gold, 10)))
    return {
        "hit_at_1": float(any(rel[:1])),
        "hit_at_5": float(any(rel[:5])),
        "hit_at_10": float(any(rel[:10])),
        "mrr_at_10": 0.0 if first is None else 1.0 / (first + 1),
        "ndcg_at_10": dcg / ideal if ideal else NAN,
    }


def _ragas_metrics() -> dict[str, object]:
    from ragas.metrics import (
        NonLLMContextPrecisionWithReference,
        NonLLMContextRecall,
        NonLLMStringSimilarity,
        RougeScore,
    )

    return {
        "context_precision": NonLLMContextPrecisionWithReference(),
        "context_recall": NonLLMContextRecall(),
        "rouge_l": RougeScore(rouge_type="rougeL", mode="fmeasure"),
        "string_similarity": NonLLMStringSimilarity(),
    }


async def _ragas_scores(pairs: list[tuple[EvalSample, ScoredSample]]) -> None:
    from ragas import SingleTurnSample

    metrics = _ragas_metrics()
    for sample, scored in pairs:
        answer = answer_text(scored.response)
        turn = SingleTurnSample(
            user_input=sample.user_input,
            response=answer,
            reference=answer_text(sample.reference) if sample.reference else None,
            retrieved_contexts=scored.retrieved_contexts,
            reference_contexts=sample.reference_contexts or None,
        )
        needs = {
            "context_precision": ("reference_contexts", sample.reference_contexts),
            "context_recall": ("reference_contexts", sample.reference_contexts),
            "rouge_l": ("reference", sample.reference and answer),
            "string_similarity": ("reference", sample.reference and answer),
        }
        for name, metric in metrics.items():
            what, present = needs[name]
            if not present:
                _nan(
                    scored,
                    name,
                    f"no {what}" if what != "reference" or not sample.reference else "no answer",
                )
                continue
            if name.startswith("context") and not scored.retrieved_contexts:
                scored.scores[name] = 0.0  # nothing retrieved: nothing relevant found
                continue
            try:
                value = float(await metric.single_turn_ascore(turn))
            except Exception as exc:  # a scorer failing on one sample must not sink the run
                _nan(scored, name, f"{type(exc).__name__}: {exc}")
                continue
            if math.isnan(value):
                _nan(scored, name, "the metric returned NaN")
            else:
                scored.scores[name] = value


def _nan(scored: ScoredSample, name: str, reason: str) -> None:
    scored.scores[name] = NAN
    scored.nan_reasons[name] = reason


def score_offline(
    samples: list[EvalSample],
    answered: list[ScoredSample],
    embed_model: BaseEmbedding,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Fill `answered[i].scores` with every offline metric for `samples[i]` (in place)."""
    asyncio.run(_ragas_scores(list(zip(samples, answered, strict=True))))
    # Semantic similarity: answers and references embedded in batches with the local model.
    todo = [
        (i, answer_text(a.response), answer_text(s.reference))
        for i, (s, a) in enumerate(zip(samples, answered, strict=True))
        if s.reference and answer_text(a.response)
    ]
    if todo:
        answers = np.asarray(embed_model.get_text_embedding_batch([t[1] for t in todo]), np.float32)
        refs = np.asarray(embed_model.get_text_embedding_batch([t[2] for t in todo]), np.float32)
        cos = (answers * refs).sum(1) / (
            np.linalg.norm(answers, axis=1) * np.linalg.norm(refs, axis=1) + 1e-12
        )
        for (i, _, _), value in zip(todo, cos, strict=True):
            answered[i].scores["semantic_similarity"] = float(value)
    for sample, scored in zip(samples, answered, strict=True):
        answer = answer_text(scored.response)
        if "semantic_similarity" not in scored.scores:
            _nan(
                scored,
                "semantic_similarity",
                NO_REFERENCE if not sample.reference else "no answer",
            )
        if sample.reference:
            scored.scores["answer_contains_reference"] = contains_reference(
                answer, answer_text(sample.reference)
            )
        else:
            _nan(scored, "answer_contains_reference", NO_REFERENCE)
        n_gold = len(sample.reference_sources or sample.reference_contexts)
        if n_gold:
            rel = relevance(sample, scored.retrieved_contexts, scored.retrieved_sources)
            scored.scores.update(retrieval_scores(rel, n_gold))
        else:
            for name in RETRIEVAL_METRICS:
                _nan(scored, name, NO_GOLD)
        if progress:
            progress(1)
