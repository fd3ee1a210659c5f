"""Training a reranker as a job in the job store, from the CLI or the Fine-tune tab: created only
once its pairs dataset and base model check out; hard negatives taken from what the app's
retriever ranks for each question (the passages a reranker has to push down); trained with a loss
per step, cancelled after the step an admin asks, resumed from its last checkpoint after a
restart, and registered as a `reranker` candidate with its provenance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import RagError
from finetune.embedding.service import (
    embedding_root,
    pairs_dataset,
    provenance_of,
    split_pairs,
    stamp,
)
from finetune.watch import LEASE_S, Cancelled, claim_kept, run_job, start_training, train_watched

if TYPE_CHECKING:
    from core.jobstore import FineTuneJob
    from core.registry import ModelVersion
    from finetune.context import FineTuneContext


@dataclass
class RerankRequest:
    """How a reranker candidate is trained; kept on its job."""

    dataset_id: int | str  # a stored pairs dataset (the embedding pairs), by id or name
    base_model: str | None = None  # a cross-encoder folder; None: the packaged MiniLM's weights
    loss: str = "listwise"
    negatives: int = 3  # hard negatives per question
    # Measured on the 10-K benchmark (bench/rerank.py, bench/NOTES.md): from the packaged
    # model's weights, 2 epochs at 1e-4 barely leave chance level; 4 at 3e-4 learn.
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 3e-4
    # Word pieces of question + passage in training; the app reads at the reranker setting's
    # window (256). Half the length trains in well under half the time.
    max_length: int = 128
    holdout: float = 0.0  # share of questions kept out of training, for the diagnostic only
    limit: int | None = None  # train on at most this many questions, sampled (bounds the time)
    max_steps: int | None = None
    seed: int = 0
    register: bool = True


def launch_reranker(
    ctx: FineTuneContext,
    request: RerankRequest,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> FineTuneJob:
    """Create a reranker training job on a stored pairs dataset, checked first (a refusal
    creates no job); train it now, or leave that to `run_reranker` (the app's worker thread)
    when `wait` is false."""
    from finetune.embedding.data import read_dataset
    from finetune.rerank.train import LOSSES, base_model

    if request.loss not in LOSSES:
        raise RagError(f"unknown loss {request.loss!r}; known: {', '.join(LOSSES)}")
    if request.negatives < 1:
        raise RagError("a reranker learns from at least one hard negative per question")
    if request.epochs < 1:
        raise RagError("train for at least one epoch")
    base = base_model(request.base_model)
    record = pairs_dataset(ctx, request.dataset_id)
    read_dataset(Path(record.path))  # there, and as its card says
    request = RerankRequest(**{**asdict(request), "dataset_id": record.id})
    job = ctx.store.create_job(
        "local",
        "reranker",
        str(base),
        request.dataset_id,
        asdict(request),
        {"reranker": ctx.settings.reranker.model_dump(mode="json")},
    )
    ctx.store.claim(job.id, ctx.holder, LEASE_S)
    if not wait:
        return job
    return run_reranker(ctx, job.id, progress)


def run_reranker(
    ctx: FineTuneContext, job_id: int, progress: Callable[[int, int], None] | None = None
) -> FineTuneJob:
    """Train (resuming from the job's last checkpoint) and register the candidate; the job ends
    succeeded, failed with the reason, or cancelled."""
    store = ctx.store
    return run_job(
        store,
        job_id,
        ctx.holder,
        "reranker training",
        lambda: _train(ctx, store.job(job_id), progress),
    )


def _train(
    ctx: FineTuneContext, job: FineTuneJob, progress: Callable[[int, int], None] | None
) -> FineTuneJob:
    from finetune.embedding.data import read_dataset
    from finetune.rerank.data import add_negatives
    from finetune.rerank.train import RerankConfig, train_reranker

    store = ctx.store
    hp = RerankRequest(**{k: v for k, v in job.hyperparameters.items() if k != "dataset_id"},
                       dataset_id=job.dataset_id)  # fmt: skip
    data, card = read_dataset(Path(pairs_dataset(ctx, job.dataset_id).path))
    train, held = split_pairs(data, hp.holdout, hp.seed)
    if hp.limit is not None and len(train) > hp.limit:
        import random

        train = train.subset(random.Random(hp.seed).sample(sorted(train.queries), hp.limit))
    folder = embedding_root(ctx.settings).parent / "reranker" / "jobs" / str(job.id)
    checkpoints, out = start_training(store, job.id, folder)
    from core.chatlog import ChatLog

    # Negatives are asked of the app's retriever: that takes a while on a large set, so the
    # job's claim is kept alive meanwhile, and a cancel asked meanwhile stops it before training.
    with claim_kept(store, job.id, ctx.holder, LEASE_S):
        counts = add_negatives(
            ctx.settings,
            ctx.registry,
            train,
            hp.negatives,
            seed=hp.seed,
            chatlog=ChatLog(ctx.registry.db),
            gate=ctx.gate,
        )
    if store.job(job.id).cancel_requested:
        raise Cancelled()
    store.add_event(
        job.id,
        f"hard negatives for {len(train)} questions: {counts['retrieved']} from the app's "
        f"retriever, {counts['mined']} mined among the pairs' own passages, "
        f"{counts['rated_down']} rated down in the chat log, {counts['random']} drawn at random",
    )
    cfg = RerankConfig(
        loss=hp.loss,  # type: ignore[arg-type]
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        max_length=hp.max_length,
        seed=hp.seed,
    )
    result = train_watched(
        ctx,
        job,
        train_reranker,
        pairs=train,
        out=out,
        config=cfg,
        checkpoints=checkpoints,
        max_steps=hp.max_steps,
        progress=progress,
    )
    fields: dict[str, Any] = {"status": "succeeded", "fine_tuned_model": str(out)}
    if hp.register:
        extra = {
            "job_id": job.id,
            "model_dir": str(out),
            "train_seconds": round(result.seconds, 1),
            "negatives": counts,
            "train_config": result.config,
        }
        version = register_reranker(
            ctx,
            out,
            card,
            train,
            job.base_model,
            extra,
            held,
            max_length=hp.max_length,
            read_focus=cfg.focus,
        )
        store.add_event(
            job.id,
            f"registered as candidate reranker v{version.id}; the gate judges it on an "
            "evaluation set",
        )
        fields["candidate_version_id"] = version.id
    return store.update(job.id, **fields)


def register_reranker(
    ctx: FineTuneContext,
    out: Path,
    card: Any,
    train: Any,
    base: str,
    extra: dict[str, Any],
    held: Any = None,
    max_length: int | None = None,
    read_focus: bool | None = None,
) -> ModelVersion:
    """Register a trained cross-encoder as a candidate reranker version, served as the settings
    serve rerankers (backend, candidates re-scored, weight) and read at the window it was trained
    at, reading long passages as it learned to (see rag.rerank.focus): read at a longer window, it
    scores passages cut differently from those it learned on, and ranks worse."""
    active = ctx.registry.active("reranker")
    spec: dict[str, Any] = {"model_dir": str(out.resolve())}
    if max_length is not None:
        spec["max_length"] = max_length
    if read_focus is not None:
        spec["focus"] = read_focus  # read as it learned: windows where the question's words are
    spec = {"reranker": spec}
    return ctx.registry.register(
        "reranker",
        f"reranker trained on {card.name} ({stamp()})",
        spec,
        parent_id=active.id if active else None,
        provenance=provenance_of(card, train, base, extra, held),
    )
