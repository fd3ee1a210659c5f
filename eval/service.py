"""One function per evaluation admin action, called alike by the command line (`python -m eval`)
and the Evaluate tab: store an evaluation set from any source, judge two stored runs through the
gate, apply a decision, promote, roll back and register. Running versions on a set and comparing
a candidate with the champion are eval.runner's `run_eval` and `compare`. The checks and messages
are these; the CLI and the tab only gather arguments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import RagError
from core.wording import counted

if TYPE_CHECKING:
    from core.evalstore import EvalRun, EvalSample, GateDecision
    from core.openai_api import ModelClient
    from core.registry import ModelVersion, RegistryEvent
    from core.settings import Settings
    from eval.runner import EvalContext
    from ingest.reembed import ReembedReport

HEADLINE = ("semantic_similarity", "answer_contains_reference", "rouge_l", "hit_at_5", "mrr_at_10")


def open_context(settings: Settings) -> EvalContext:
    """The evaluation context of these settings, with the judge when one is configured."""
    from eval.judge import build_judge
    from eval.runner import EvalContext

    return EvalContext.open(settings, judge=build_judge(settings.eval.judge))


@dataclass
class SetRequest:
    """Where an evaluation set comes from: exactly one of `path` (JSONL with Ragas fields),
    `dataset` (a `datasets` source mapped by field names), `from_log` (a sample of logged turns),
    `generate` (questions the judge writes from indexed passages); none: the configured golden
    set."""

    path: Path | None = None
    dataset: str | None = None
    question_field: str = "question"
    reference_field: str | None = "correct_answer"
    contexts_field: str | None = "support"
    sources_field: str | None = None
    split: str | None = None
    from_log: bool = False
    size: int = 100
    feedback: str = "all"
    since: datetime | None = None
    teacher: bool = False  # from_log: the judge writes references of turns not rated up
    generate: int | None = None
    limit: int | None = None
    kind: str = "file"  # a JSONL set: `file` from disk, `upload` from the Evaluate tab
    name: str | None = None  # the name it is listed under (default: the file's)


def judge_llm(settings: Settings) -> ModelClient:
    """The configured judge's client, which also writes test sets and references."""
    from core.openai_api import connect

    judge = settings.eval.judge
    if not judge.model and not judge.azure_deployment:
        raise RagError(
            "writing questions or references needs an LLM: set RAG_EVAL__JUDGE__MODEL and "
            "RAG_EVAL__JUDGE__BASE_URL (or OPENAI_API_KEY)"
        )
    return connect(judge)


def store_set(ctx: EvalContext, request: SetRequest) -> tuple[int, list[str]]:
    """Read the set the request names and store it (once per content); (its id, notes)."""
    from eval import sets

    notes: list[str] = []
    if request.generate:
        samples, skipped = _generate(ctx, request.generate)
        if skipped:
            notes.append(f"{len(skipped)} chunks skipped: {skipped[0]}")
        name = f"generated from the index ({len(samples)})"
        origin = {"kind": "generated", "generator": judge_llm(ctx.settings).model}
    elif request.from_log:
        from core.chatlog import ChatLog

        teacher = sets.openai_teacher(judge_llm(ctx.settings)) if request.teacher else None
        # The questions that trained a registered version stay out: the set can then judge every
        # candidate (the gate refuses a set holding a candidate's training questions).
        trained = sets.trained_questions(ctx.registry.versions())  # in id order
        samples = sets.from_chatlog(
            ChatLog(ctx.registry.db),
            size=request.size,
            since=request.since,
            feedback=request.feedback,
            seed=ctx.settings.eval.seed,
            teacher=teacher,
            trained=trained,
        )
        judged = ctx.settings.eval.judge.ready
        kept = samples[: request.limit] if request.limit else samples
        if not judged and not any(s.reference or s.reference_contexts for s in kept):
            raise sets.EvalSetError(
                f"none of the {counted(len(kept), 'sampled turn')} carries a reference, so "
                "nothing could be scored on them: only an answer rated up brings its answer and "
                "cited passages (what the answer and retrieval scores compare with), and with no "
                "judge model configured (RAG_EVAL__JUDGE__MODEL with a key or base URL) no score "
                "works without one. "
                "Sample the turns rated up, or add a golden set"
            )
        if trained:
            labels = ", ".join(dict.fromkeys(trained.values()))
            notes.append(
                f"Questions that trained {labels} are never sampled: a model is never judged on "
                "its training questions."
            )
        name = f"chat log sample ({request.feedback}, {len(samples)})"
        if any(s.reference for s in samples):
            notes.append(
                "Rated-up turns keep the app's own answer as their reference: answer scores "
                "measure agreement with what it said then, so the versions that wrote them score "
                "near 1 on those turns. Compare a candidate against them, not the active versions "
                "against themselves."
            )
        origin = {
            "kind": "chatlog",
            "feedback": request.feedback,
            "since": request.since.isoformat() if request.since else None,
            "references_by": judge_llm(ctx.settings).model if request.teacher else None,
        }
    elif request.dataset:
        samples = sets.from_dataset(
            request.dataset,
            request.question_field,
            request.reference_field or None,
            request.contexts_field or None,
            request.sources_field,
            request.split,
            request.limit,
        )
        # A local file by its own name (an upload's path is a temporary folder's).
        shown = Path(request.dataset).name if Path(request.dataset).is_file() else request.dataset
        name = request.name or f"dataset {shown}"
        origin = {"kind": "dataset", "source": request.dataset}
    else:
        path = request.path or ctx.settings.eval.golden_set
        if path is None:
            raise RagError(
                "no evaluation set: give a JSONL golden set, a `datasets` source, a sample of the "
                "chat log or generated questions, or set RAG_EVAL__GOLDEN_SET"
            )
        samples = sets.load_jsonl(Path(path))
        name = request.name or Path(path).name
        origin = {"kind": request.kind, "path": str(path)}
    if request.limit:
        samples = samples[: request.limit]
    return ctx.save_set(name, samples, origin), notes


def _generate(ctx: EvalContext, size: int) -> tuple[list[EvalSample], list[str]]:
    from core.embedding.providers import embedding_id
    from core.index.store import chroma_client, index_embedding, open_collection
    from core.registry import apply_spec
    from eval.sets import generate_from_chunks

    llm = judge_llm(ctx.settings)
    applied = apply_spec(ctx.settings, ctx.registry.active("embedding"))
    chroma = chroma_client(applied)
    collection = open_collection(
        chroma,
        applied.chroma.collection,
        embedding_id(index_embedding(applied, chroma)),
        create=False,
    )
    return generate_from_chunks(collection, llm, size, seed=ctx.settings.eval.seed)


def judge_runs(ctx: EvalContext, champion_run_id: int, candidate_run_id: int) -> GateDecision:
    """The gate's decision on two stored runs of one set (the candidate is the version that
    differs between them); stored like any other decision."""
    from eval.evidence import check_evidence
    from eval.runner import decide, policy_from

    if champion_run_id == candidate_run_id:
        raise RagError(f"run {champion_run_id} against itself proves nothing; choose two runs")
    champion, candidate = ctx.store.run(champion_run_id), ctx.store.run(candidate_run_id)
    if champion.set_hash != candidate.set_hash:
        raise RagError("those runs answered different sets; compare two runs of one set")
    if champion.versions == candidate.versions:
        raise RagError(
            f"runs {champion_run_id} and {candidate_run_id} ran the same versions "
            f"({candidate.versions}): nothing differs between them for the gate to judge"
        )
    kind = "chat"
    if candidate.chat_version_id != champion.chat_version_id:
        version_id = candidate.chat_version_id
    elif candidate.reranker_version_id != champion.reranker_version_id:
        # A run records a reranker only when one re-ranked: the candidate may be the one that
        # re-ranks nothing (a rollback to none), judged as a reranker all the same.
        kind = "reranker"
        version_id = candidate.reranker_version_id
    else:
        version_id = candidate.embedding_version_id
    if version_id is not None:
        version = ctx.registry.get(version_id)
        kind = version.kind
        _, _, samples = ctx.store.load_set(candidate.set_id)
        check_evidence(version, samples, ctx.store.set_info(candidate.set_id).origin)
    return decide(ctx, champion, candidate, version_id, policy_from(ctx.settings.eval, kind))


def apply(ctx: EvalContext, decision: GateDecision) -> GateDecision:
    """Act on a decision: promote a winner (an embedding candidate is re-embedded first),
    reject a loser; returns the decision as stored afterwards."""
    from eval.runner import apply_decision

    apply_decision(ctx, decision)
    return ctx.store.decision(decision.id) if decision.id is not None else decision


@dataclass
class Promoted:
    """What a promotion by hand did: the registry event, the re-embed (an embedding version with
    its own collection), and what the gate had said of the version."""

    event: RegistryEvent
    reembed: ReembedReport | None
    approved: bool  # the gate's latest decision on it promoted it
    verdict: str  # that decision in words


def promote(
    ctx: EvalContext, version_id: int, reason: str = "admin", progress: bool = True
) -> Promoted:
    """Make a version active (the admin's call, whatever the gate said; what it said is returned
    with the event); an embedding version with its own collection is re-embedded into it first
    (blue/green), and the registry switches only once it is complete."""
    from ingest.reembed import promote_version

    approved, verdict = gate_verdict(ctx, version_id)
    event, report = promote_version(ctx.settings, ctx.registry, version_id, reason, progress)
    return Promoted(event, report, approved, verdict)


# How the gate words a check that passed; a rejection is explained by the first other reason.
_PASSED = ("a real improvement", "within tolerance", "(skipped)")


def gate_verdict(ctx: EvalContext, version_id: int) -> tuple[bool, str]:
    """Whether the gate's latest decision on a version promoted it, and that decision in words:
    what an admin promoting it by hand should know."""
    decision = ctx.store.last_decision_for(version_id)
    if decision is None:
        return False, "the gate has never compared it with the active version"
    if decision.promote:
        return True, f"the gate promoted it (decision {decision.id})"
    failing = [r for r in decision.reasons if not r.endswith(_PASSED)]
    why = (failing or decision.reasons or ["it did not win"])[0]
    return False, f"the gate rejected it (decision {decision.id}: {why})"


def rollback(ctx: EvalContext, kind: str, reason: str = "admin") -> RegistryEvent:
    """Restore the version of `kind` that was active before the current one."""
    return ctx.registry.rollback(kind, reason=reason)  # type: ignore[arg-type]


def register(
    ctx: EvalContext,
    kind: str,
    name: str,
    spec: str | dict[str, Any] = "{}",
    parent_id: int | None = None,
    provenance: str | dict[str, Any] = "{}",
) -> ModelVersion:
    """Add a candidate version; its spec is checked against the settings it overrides."""
    try:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        provenance = json.loads(provenance) if isinstance(provenance, str) else provenance
    except json.JSONDecodeError as exc:
        raise RagError(f"the spec and the provenance must be JSON objects: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(provenance, dict):
        raise RagError("the spec and the provenance must be JSON objects")
    return ctx.registry.register(kind, name, spec, parent_id, provenance)  # type: ignore[arg-type]


def run_line(run: EvalRun) -> str:
    """One line about a run: versions, set (by its number, as the set list names it), samples,
    headline metrics, unmeasured samples."""
    versions = run.versions
    parts = []
    for name in HEADLINE:
        m = run.summary.get(name)
        if m is not None:
            if m.mean is None:
                parts.append(f"{name} not measured")
            else:
                gaps = f" ({m.nan} of {m.measured + m.nan} not measured)" if m.nan else ""
                parts.append(f"{name}={m.mean:.3f}{gaps}")
    nan = sum(m.nan for m in run.summary.values())
    n = max((m.measured + m.nan for m in run.summary.values()), default=0)
    missing = (
        f"; {counted(nan, 'score')} could not be measured (the samples say why)" if nan else ""
    )
    return (
        f"run {run.id}: {versions} on set {run.set_id} ({n} samples) in "
        f"{run.duration_s:.1f} s: " + ", ".join(parts) + missing
    )


def decision_line(decision: GateDecision) -> str:
    verdict = "PROMOTE" if decision.promote else "REJECT"
    applied = " (applied)" if decision.applied else ""
    return (
        f"decision {decision.id}: {verdict}{applied} v{decision.candidate_version_id}: "
        + "; ".join(decision.reasons)
    )
