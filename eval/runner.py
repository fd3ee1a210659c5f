"""Running evaluations: a model version (chat + embedding) answers every question of a stored set,
the answers are scored (offline metrics always, LLM metrics with a judge), and the run is stored;
champion against candidate on one set, the gate's decision stored, and applied on request."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import RagError
from core.evalstore import EvalRun, EvalSample, EvalStore, GateDecision, ScoredSample
from core.registry import Registry, RegistryError, apply_spec, strip_secrets
from eval.evidence import check_evidence
from eval.gate import GatePolicy, compare_runs, decide_promotion
from eval.metrics import score_offline
from eval.sets import check_no_training_overlap, content_hash
from rag.live import EmbeddingCache, build_pipeline
from rag.prompt import system_prompt

if TYPE_CHECKING:
    from core.registry import ModelVersion
    from core.settings import EvalSettings, Settings
    from eval.judge import Judge
    from rag.pipeline import RagPipeline

log = logging.getLogger(__name__)


def policy_from(cfg: EvalSettings, kind: str = "chat") -> GatePolicy:
    """The gate's policy for a candidate of `kind`: an embedding or reranker candidate changes
    what is retrieved, so it must improve the retrieval metric; a chat candidate the answers."""
    primary = cfg.primary_metric if kind == "chat" else cfg.retrieval_primary_metric
    return GatePolicy(
        primary_metric=primary,
        margin=cfg.margin,
        guard_metrics=list(cfg.guard_metrics),
        guard_tolerance=cfg.guard_tolerance,
        max_nan_share=cfg.max_nan_share,
        min_samples=cfg.min_samples,
        resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
    )


@dataclass
class EvalContext:
    """What every evaluation needs, built once per entry point."""

    settings: Settings
    registry: Registry
    store: EvalStore
    embeddings: EmbeddingCache = field(default_factory=EmbeddingCache)
    judge: Judge | None = None

    @classmethod
    def open(cls, settings: Settings, judge: Judge | None = None) -> EvalContext:
        from core.db.database import open_database

        db = open_database(settings.database_url)
        registry = Registry(db)
        registry.seed(settings)
        return cls(settings, registry, EvalStore(db), judge=judge)

    def save_set(
        self, name: str, samples: list[EvalSample], origin: dict[str, Any] | None = None
    ) -> int:
        return self.store.save_set(name, content_hash(samples), samples, origin)


def warm_up(pipeline: RagPipeline, samples: list[EvalSample], batch: int = 256) -> None:
    """Without an LLM each answer embeds the sentences of its passages; embed them for the whole
    set up front, in large batches (the passages come from one batched search), so that answering
    hundreds of questions is cache hits rather than hundreds of small embedding calls."""
    from rag.units import split_sentences

    if pipeline.chat_model.llm is not None:
        return
    depth = getattr(pipeline.retriever, "top_k", None) or 10
    texts: dict[str, None] = {}
    questions = [s.user_input for s in samples]
    for start in range(0, len(questions), batch):
        part = questions[start : start + batch]
        vectors = pipeline.embed_model.get_text_embedding_batch(part)
        found = pipeline.collection.query(
            query_embeddings=vectors, n_results=depth, include=["documents"]
        )
        for docs in found["documents"] or []:
            texts.update(dict.fromkeys(d for d in docs if d))
    sentences = list(dict.fromkeys(s for t in texts for s in split_sentences(t)))
    if sentences:
        pipeline.sentence_vectors.get(sentences)


def answer_set(
    pipeline: RagPipeline, samples: list[EvalSample], progress: bool = True, desc: str = "answer"
) -> list[ScoredSample]:
    """Each question answered by `pipeline` (no history, not logged to the chat log). A failed
    answer is kept as a sample with no response; its metrics become NaN with the reason."""
    from tqdm import tqdm

    warm_up(pipeline, samples)
    out = []
    for i, sample in enumerate(tqdm(samples, desc=desc, unit="q", disable=not progress)):
        scored = ScoredSample(idx=i, user_input=sample.user_input, reference=sample.reference)
        try:
            last = list(pipeline.ask("eval", sample.user_input))[-1]
        except RagError as exc:
            scored.nan_reasons["answer"] = f"the model failed: {exc}"
            out.append(scored)
            continue
        scored.response = last.text
        scored.retrieved_contexts = [s.text for s in last.sources]
        scored.retrieved_sources = [s.source for s in last.sources]
        out.append(scored)
    return out


def _versions(
    ctx: EvalContext, chat_id: int | None, embedding_id: int | None, reranker_id: int | None = None
) -> tuple[ModelVersion | None, ModelVersion | None, ModelVersion | None]:
    found = []
    for kind, wanted in (("chat", chat_id), ("embedding", embedding_id), ("reranker", reranker_id)):
        version = ctx.registry.get(wanted) if wanted else ctx.registry.active(kind)
        if version is not None and version.kind != kind:
            raise RegistryError(f"version {version.id} is a {version.kind} version, not {kind}")
        found.append(version)
    chat, embedding, reranker = found
    return chat, embedding, reranker


def run_eval(
    ctx: EvalContext,
    set_id: int,
    chat_id: int | None = None,
    embedding_id: int | None = None,
    progress: bool = True,
    reranker_id: int | None = None,
) -> EvalRun:
    """Evaluate the given versions (default: the active ones) on stored set `set_id`."""
    chat, embedding, reranker = _versions(ctx, chat_id, embedding_id, reranker_id)
    name, _, samples = ctx.store.load_set(set_id)
    check_no_training_overlap(samples, chat, embedding, reranker)
    applied = apply_spec(ctx.settings, chat, embedding, reranker)
    snapshot = strip_secrets(applied.model_dump(mode="json"))
    judge = ctx.judge
    run_id = ctx.store.start_run(
        set_id,
        chat.id if chat else None,
        embedding.id if embedding else None,
        snapshot,
        judge.model if judge else None,
        # Named only when it re-ranks: the seeded version without a model changes nothing.
        reranker.id if reranker is not None and applied.reranker.model_dir else None,
    )
    started = time.perf_counter()
    try:
        pipeline = build_pipeline(
            ctx.settings,
            chat,
            embedding,
            None,
            system_prompt(ctx.settings),
            ctx.embeddings,
            reranker,
        )
        label = chat.label if chat else "chat"
        answered = answer_set(pipeline, samples, progress, desc=f"answer ({label})")
        from tqdm import tqdm

        with tqdm(total=len(samples), desc="score", unit="q", disable=not progress) as bar:
            score_offline(samples, answered, pipeline.embed_model, bar.update)
        tokens = (0, 0)
        if judge is not None:
            tokens = judge.score(samples, answered, pipeline.embed_model, progress=progress)
        for s in answered:  # a failed answer: nothing of it is measured
            if "answer" in s.nan_reasons:
                for metric in s.scores:
                    s.nan_reasons.setdefault(metric, s.nan_reasons["answer"])
    except Exception as exc:
        ctx.store.fail_run(run_id, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        raise
    run = ctx.store.finish_run(
        run_id,
        answered,
        time.perf_counter() - started,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
    )
    log.info("eval run %s on %s done", run.id, name)
    return run


def compare(
    ctx: EvalContext,
    set_id: int,
    candidate_id: int,
    auto_promote: bool = False,
    progress: bool = True,
    policy: GatePolicy | None = None,
) -> tuple[GateDecision, EvalRun, EvalRun]:
    """Champion (the active versions) and candidate answer the same set; the gate decides.
    With `auto_promote` a winner is promoted (reason: the decision id) and a loser rejected."""
    candidate = ctx.registry.get(candidate_id)
    policy = policy or policy_from(ctx.settings.eval, candidate.kind)
    champion = ctx.registry.active(candidate.kind)
    if champion is not None and champion.id == candidate.id:
        raise RegistryError(f"{candidate.label} is already the champion")
    _, _, samples = ctx.store.load_set(set_id)
    # Before spending anything: never its training questions, and evidence its recipe did not make.
    check_no_training_overlap(samples, candidate, champion)
    check_evidence(candidate, samples, ctx.store.set_info(set_id).origin)
    if candidate.kind == "embedding":
        from ingest.reembed import prepare_version

        # The candidate answers from its own collection: built (or resumed) from the active one.
        report = prepare_version(ctx.settings, ctx.registry, candidate, progress=progress)
        if report is not None:
            log.info("%s", report.summary())
    champ_run = run_eval(ctx, set_id, progress=progress)
    if candidate.kind == "chat":
        cand_run = run_eval(ctx, set_id, chat_id=candidate.id, progress=progress)
    elif candidate.kind == "reranker":
        cand_run = run_eval(ctx, set_id, reranker_id=candidate.id, progress=progress)
    else:
        cand_run = run_eval(ctx, set_id, embedding_id=candidate.id, progress=progress)
    decision = decide(ctx, champ_run, cand_run, candidate.id, policy)
    if auto_promote:
        apply_decision(ctx, decision)
        decision = ctx.store.decision(decision.id)
    return decision, champ_run, cand_run


def decide(
    ctx: EvalContext,
    champion_run: EvalRun,
    candidate_run: EvalRun,
    candidate_id: int | None,
    policy: GatePolicy,
) -> GateDecision:
    """The gate's decision on two stored runs of one set, stored with both run ids."""
    if champion_run.set_hash != candidate_run.set_hash:
        raise RagError("champion and candidate were evaluated on different sets")
    comparison = compare_runs(
        ctx.store.samples(champion_run.id), ctx.store.samples(candidate_run.id), policy
    )
    promote, reasons = decide_promotion(comparison, policy)
    return ctx.store.save_decision(
        GateDecision(
            champion_run_id=champion_run.id,
            candidate_run_id=candidate_run.id,
            candidate_version_id=candidate_id,
            promote=promote,
            reasons=reasons,
            comparison={k: v.model_dump() for k, v in comparison.items()},
            policy=policy.model_dump(),
        )
    )


def apply_decision(ctx: EvalContext, decision: GateDecision) -> None:
    """Promote the candidate of a winning decision, reject the candidate of a losing one."""
    if decision.candidate_version_id is None or decision.applied:
        return
    if decision.promote:
        from ingest.reembed import promote_version

        # Blue/green: the candidate's collection is complete before the registry switches to it.
        promote_version(
            ctx.settings, ctx.registry, decision.candidate_version_id, f"decision:{decision.id}"
        )
    else:
        ctx.registry.reject(decision.candidate_version_id)
    ctx.store.mark_applied(decision.id)
