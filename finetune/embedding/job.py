"""Training a candidate embedding model as a job in the job store, from the CLI or the Fine-tune
tab: created only once its dataset and base model check out, trained with progress and a loss per
step, cancelled after the step an admin asks, resumed from its last checkpoint after a restart,
and registered as a candidate on the backend and window the active model is served with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import RagError
from finetune.embedding.service import (
    DIAGNOSTIC,
    active_embedding,
    embedding_root,
    held_out_figures,
    model_dir,
    pairs_dataset,
    provenance_of,
    read_window,
    split_pairs,
    stamp,
    write_heldout,
)
from finetune.watch import LEASE_S, run_job, start_training, train_watched

if TYPE_CHECKING:
    from core.jobstore import FineTuneJob
    from core.records import DatasetCard
    from core.registry import ModelVersion
    from core.settings import Settings
    from finetune.context import FineTuneContext
    from finetune.embedding.data import PairSet


# Word pieces per text in training unless a request says otherwise: the window the loop's recipe
# was measured at (bench/NOTES.md, "Embedding fine-tuning").
TRAIN_WINDOW = 256


@dataclass
class TrainRequest:
    """How a candidate is trained (sentence-transformers, MNRL family); kept on its job."""

    dataset_id: int | str  # a stored pairs dataset, by id or name
    loss: str = "gist"
    epochs: int = 2
    batch_size: int = 32
    mini_batch_size: int = 16
    learning_rate: float = 1e-4
    # Word pieces per text in training (default: TRAIN_WINDOW, or the active model's window if
    # smaller). The candidate is always read at the window the active model is read at: the
    # 10-K benchmark trained at 256 and read at 512 scored best, and the gate then compares the
    # fine-tuning alone. Training at 512 holds about four times the attention memory (over 20 GB
    # at 32 pairs a step with a mined negative) for no measured gain.
    max_seq_length: int | None = None
    holdout: float = 0.2  # share of questions held out for the training diagnostic
    max_steps: int | None = None
    seed: int = 0
    register: bool = True


def training_window(request: TrainRequest, window: int | None) -> int:
    """Word pieces per text in training for `request`, the active model being read at `window`."""
    return request.max_seq_length or min(TRAIN_WINDOW, window or TRAIN_WINDOW)


def launch_training(
    ctx: FineTuneContext,
    request: TrainRequest,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> FineTuneJob:
    """Create a training job for the active embedding model on a stored pairs dataset, checked
    first (a refusal creates no job); train it now, or leave that to `run_training` (the app's
    worker thread) when `wait` is false."""
    from finetune.embedding.data import read_dataset
    from finetune.embedding.train import check_loss

    check_loss(request.loss)
    record = pairs_dataset(ctx, request.dataset_id)
    data, _ = read_dataset(Path(record.path))  # there, and as its card says
    train, _ = split_pairs(data, request.holdout, request.seed)
    if len(train) < 2:
        # Each question learns against the other questions' passages in its batch: one pair
        # teaches nothing. Said before a job exists, so that a refusal leaves nothing behind.
        raise RagError(
            f"dataset {record.id} has {len(train)} training pair(s) to learn from; training needs "
            "at least 2 (each question is told apart from the others' passages). Build the "
            "pairs again with more of them: more rated-up answers, a corpus source or a larger file"
        )
    request = TrainRequest(**{**asdict(request), "dataset_id": record.id})
    _, applied = active_embedding(ctx)
    base = model_dir(applied)
    job = ctx.store.create_job(
        "local",
        "embedding",
        str(base),
        request.dataset_id,
        asdict(request),
        {"embedding": applied.embedding.model_dump(mode="json", exclude={"api_key"})},
    )
    ctx.store.claim(job.id, ctx.holder, LEASE_S)
    if not wait:
        return job
    return run_training(ctx, job.id, progress)


def run_training(
    ctx: FineTuneContext, job_id: int, progress: Callable[[int, int], None] | None = None
) -> FineTuneJob:
    """Train (resuming from the job's last checkpoint), report the held-out diagnostic, and
    register the candidate; the job ends succeeded, failed with the reason, or cancelled."""
    store = ctx.store
    return run_job(
        store,
        job_id,
        ctx.holder,
        "embedding fine-tuning",
        lambda: _train(ctx, store.job(job_id), progress),
    )


def _train(
    ctx: FineTuneContext, job: FineTuneJob, progress: Callable[[int, int], None] | None
) -> FineTuneJob:
    from finetune.embedding.data import read_dataset
    from finetune.embedding.train import TrainConfig, train_model

    store = ctx.store
    hp = TrainRequest(**{k: v for k, v in job.hyperparameters.items() if k != "dataset_id"},
                      dataset_id=job.dataset_id)  # fmt: skip
    data, card = read_dataset(Path(pairs_dataset(ctx, job.dataset_id).path))
    train, held = split_pairs(data, hp.holdout, hp.seed)
    active, applied = active_embedding(ctx)
    window = read_window(applied)
    cfg = TrainConfig(
        loss=hp.loss,  # type: ignore[arg-type]
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        mini_batch_size=hp.mini_batch_size,
        learning_rate=hp.learning_rate,
        max_seq_length=training_window(hp, window),
        seed=hp.seed,
    )
    checkpoints, out = start_training(
        store, job.id, embedding_root(ctx.settings) / "jobs" / str(job.id)
    )
    train_watched(
        ctx,
        job,
        train_model,
        pairs=train,
        out=out,
        config=cfg,
        checkpoints=checkpoints,
        max_steps=hp.max_steps,
        progress=progress,
    )
    diagnostic: dict[str, Any] = {}
    if held is not None:
        diagnostic = held_out_figures(held, Path(job.base_model), out, window)
        base, cand = diagnostic["base"], diagnostic["candidate"]
        store.add_event(
            job.id,
            f"diagnostic on {len(held)} held-out pairs ({DIAGNOSTIC}): mrr_at_10 "
            f"{base['mrr_at_10']:.3f} -> {cand['mrr_at_10']:.3f}, hit_at_5 "
            f"{base['hit_at_5']:.3f} -> {cand['hit_at_5']:.3f}",
        )
    write_heldout(held, out)
    fields: dict[str, Any] = {"status": "succeeded", "fine_tuned_model": str(out)}
    if hp.register:
        version = register_candidate(
            ctx, active, applied, out, card, train, window, diagnostic, held
        )
        version_note = f"registered as candidate embedding v{version.id}"
        store.add_event(job.id, f"{version_note}; the gate judges it on an evaluation set")
        fields["candidate_version_id"] = version.id
    return store.update(job.id, **fields)


def register_candidate(
    ctx: FineTuneContext,
    active: ModelVersion | None,
    applied: Settings,
    out: Path,
    card: DatasetCard,
    train: PairSet,
    window: int | None,
    diagnostic: dict[str, Any],
    held: PairSet | None = None,
) -> ModelVersion:
    """Register a trained model as a candidate embedding version, served on the active model's
    backend and window, reading its own collection (re-embedded from the active one)."""
    from core.embedding.providers import embedding_id
    from core.index.store import index_embedding

    served = index_embedding(applied)
    collection = f"{applied.chroma.collection}-ft-{stamp()}".lower()[:60]
    spec = {
        "embedding": {
            "provider": "local",
            "model": str(out.resolve()),
            "max_seq_length": window,
            "backend": served.backend,
            "query_adapter": None,
        },
        "chroma": {"collection": collection},
    }
    return ctx.registry.register(
        "embedding",
        f"fine-tuned on {card.name}",
        spec,
        parent_id=active.id if active else None,
        provenance=provenance_of(
            card,
            train,
            embedding_id(served),
            {"heldout_diagnostic": diagnostic, "model_dir": str(out)},
            held,
        ),
    )
