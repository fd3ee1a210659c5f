"""Jobs from launch to candidate: validate the dataset's file, create the job row, run it on its
backend (`local` trains here; `openai` is polled), keep its events, and register the finished
model in the registry as a candidate `chat` version with its provenance. A restarted process
resumes every unfinished job; cancel works from any process through the database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import RagError
from core.jobstore import DatasetRecord, FineTuneJob, JobError
from finetune.context import FineTuneContext
from finetune.validate import (
    ValidationReport,
    estimate_cost,
    hf_token_counter,
    lookup,
    openai_token_counter,
    validate_file,
)
from finetune.watch import LEASE_S

if TYPE_CHECKING:
    from core.settings import Settings
    from finetune.validate import CostEstimate

log = logging.getLogger(__name__)


def base_model_of(settings: Settings, backend: str, base_model: str | None = None) -> str:
    """The model a job fine-tunes: the one asked for, else RAG_FINETUNE__BASE_MODEL, else (on
    `openai`, or when the chat model itself is a local folder) the chat model. A `local` job needs
    a Hugging Face model folder on this machine."""
    if backend not in ("local", "openai"):
        raise RagError(f"unknown fine-tuning backend {backend!r}; known: local, openai")
    model = (base_model or "").strip() or settings.finetune.base_model
    if not model and (backend == "openai" or settings.llm.provider == "local"):
        model = settings.llm.model
    if backend == "local":
        if not model:
            raise RagError(
                "the local backend fine-tunes a Hugging Face causal LM folder on this machine, "
                "and no base model is chosen: name that folder as the base model (or set "
                "RAG_FINETUNE__BASE_MODEL)"
            )
        if not Path(model).is_dir():
            raise RagError(
                f"the local backend fine-tunes a Hugging Face causal LM folder on this machine; "
                f"{model!r} is not a folder here: name one as the base model"
            )
    return model


def hyperparameters(settings: Settings, backend: str, method: str) -> dict[str, Any]:
    """The job's hyperparameters as its backend takes them."""
    ft = settings.finetune
    if backend == "openai":
        hp: dict[str, Any] = {
            "n_epochs": ft.epochs,
            "batch_size": ft.batch_size,
            "learning_rate_multiplier": ft.learning_rate_multiplier,
            "suffix": ft.suffix,
            "seed": ft.seed,
        }
        if method == "dpo":
            hp["beta"] = ft.dpo_beta
        return hp
    return {
        "n_epochs": ft.epochs,
        "max_steps": ft.max_steps,
        "batch_size": ft.batch_size,
        "learning_rate": ft.learning_rate,
        "lora_r": ft.lora_r,
        "lora_alpha": ft.lora_alpha,
        "lora_dropout": ft.lora_dropout,
        "beta": ft.dpo_beta,
        "max_length": ft.max_length,
        "save_steps": ft.checkpoint_steps,
        "seed": ft.seed,
    }


def token_limit(settings: Settings, backend: str, base_model: str) -> int:
    if backend == "local":
        return settings.finetune.max_length
    return lookup(settings.finetune.token_limits, base_model) or 65536


def training_file(dataset: DatasetRecord, method: str) -> Path:
    if dataset.card.kind == "embedding":
        raise JobError(
            f"dataset {dataset.id} ({dataset.name}) holds embedding training pairs, not chat "
            "examples: the embedding model or the reranker trains on it; build a chat dataset "
            "for the chat model"
        )
    role = "dpo_train" if method == "dpo" else "train"
    name = dataset.card.files.get(role)
    if name is None:
        what = "preference pairs" if method == "dpo" else "training examples"
        raise JobError(f"dataset {dataset.id} ({dataset.name}) has no {what}")
    path = Path(dataset.path) / name
    if not path.is_file():
        raise JobError(f"{path} of dataset {dataset.id} is missing; build the dataset again")
    return path


def check_file(
    settings: Settings, path: Path, backend: str, method: str, base_model: str
) -> tuple[ValidationReport, CostEstimate]:
    """Validate a chat-format JSONL file for this backend and method, with the cost estimate
    (a `local` job costs nothing but time: its price is 0)."""
    counter = hf_token_counter(base_model) if backend == "local" else openai_token_counter()
    report = validate_file(path, counter, token_limit(settings, backend, base_model), method)
    price = (
        0.0
        if backend == "local"
        else lookup(settings.finetune.price_per_million_tokens, base_model)
    )
    return report, estimate_cost(report, settings.finetune.epochs, price)


def check_dataset(
    settings: Settings,
    dataset: DatasetRecord,
    backend: str,
    method: str,
    base_model: str,
) -> tuple[ValidationReport, CostEstimate]:
    """Validate the dataset's training file for this backend and method, with the cost estimate
    (a `local` job costs nothing but time: its price is 0)."""
    return check_file(settings, training_file(dataset, method), backend, method, base_model)


def _settings_snapshot(settings: Settings) -> dict[str, Any]:
    from core.registry import strip_secrets

    data = settings.finetune.model_dump(mode="json")
    data["teacher"] = strip_secrets(data.get("teacher") or {})
    return data


def openai_preflight(
    ctx: FineTuneContext, model: str, today: date | None = None
) -> RagError | None:
    """What the openai backend would refuse a new job with now (no credentials: ConfigError; the
    provider no longer takes jobs for `model`: JobRefused), or None. Checked before a job exists:
    Launch raises it, Validate says it."""
    from finetune.openai_jobs import JobRefused, creation_refusal

    try:
        ctx.client()
    except RagError as exc:
        return exc
    refusal = creation_refusal(model, today or datetime.now(UTC).date())
    return JobRefused(refusal) if refusal else None


def launch(
    ctx: FineTuneContext,
    dataset_id: int,
    backend: str | None = None,
    method: str | None = None,
    base_model: str | None = None,
    today: date | None = None,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> FineTuneJob:
    """Validate, create and start a job. `local` trains now (unless `wait` is False: then the
    caller runs `run_local`); `openai` uploads and creates the provider's job, then returns."""
    settings = ctx.settings
    backend = backend or settings.finetune.backend
    method = method or settings.finetune.method
    model = base_model_of(settings, backend, base_model)
    dataset = ctx.store.dataset(dataset_id)
    report, _ = check_dataset(settings, dataset, backend, method, model)
    if not report.ok:
        first = "; ".join(f"line {e.line}: {e.kind}: {e.message}" for e in report.errors[:5])
        raise JobError(f"dataset {dataset_id} is not valid for training: {first}")
    if backend == "openai":
        # Refused before a job exists: no credentials, or the provider no longer takes jobs.
        refusal = openai_preflight(ctx, model, today)
        if refusal is not None:
            raise refusal
    job = ctx.store.create_job(
        backend,
        method,
        model,
        dataset_id,
        hyperparameters(settings, backend, method),
        _settings_snapshot(settings),
    )
    ctx.store.claim(job.id, ctx.holder, LEASE_S)
    if backend == "openai":
        try:
            job = ctx.backend("openai").start(job, dataset, today)
        finally:
            ctx.store.release(job.id, ctx.holder)
        return job
    if not wait:
        return job
    return run_local(ctx, job.id, progress)


def run_local(
    ctx: FineTuneContext, job_id: int, progress: Callable[[int, int], None] | None = None
) -> FineTuneJob:
    """Train a `local` job in this process (resuming from its checkpoint), then register it."""
    job = ctx.store.job(job_id)
    if job.method == "embedding":  # the embedding model: trained and registered there
        from finetune.embedding.job import run_training

        return run_training(ctx, job_id, progress)
    if job.method == "reranker":  # likewise the reranker
        from finetune.rerank.job import run_reranker

        return run_reranker(ctx, job_id, progress)
    dataset = ctx.store.dataset(job.dataset_id)
    job = ctx.backend("local").run(job, dataset, progress)
    return finish(ctx, job)


def finish(ctx: FineTuneContext, job: FineTuneJob) -> FineTuneJob:
    """Register a succeeded job's model as a candidate `chat` version (once)."""
    if job.status != "succeeded" or job.candidate_version_id is not None:
        return job
    if job.method in ("embedding", "reranker"):  # registered by its trainer, or asked not to be
        return job
    dataset = ctx.store.dataset(job.dataset_id)
    spec, extra = ctx.backend(job.backend).candidate(job)
    card = dataset.card
    metrics = ctx.store.metrics(job.id)
    last: dict[str, float] = {}
    for event in metrics:
        last.update(event.metrics)
    ids = card.source_turn_ids
    provenance = {
        "job_id": job.id,
        "backend": job.backend,
        "method": job.method,
        "external_id": job.external_id,
        "base_model": job.base_model,
        "dataset_id": dataset.id,
        "dataset_name": dataset.name,
        "dataset_hash": card.content_hash,
        "dataset_source": card.source,
        "teacher_model": card.teacher_model,
        "rubric_version": card.rubric_version,
        "source_turn_ids": {"first": min(ids), "last": max(ids), "count": len(ids)}
        if ids
        else None,
        "train_question_keys": card.train_question_keys,
        "training_metrics": last,
        "hyperparameters": job.hyperparameters,
        "settings": job.settings,
        **extra,
    }
    suffix = f" ({job.method}, {card.name})"
    name = (job.fine_tuned_model or f"{Path(job.base_model).name} + LoRA job {job.id}") + suffix
    version = ctx.registry.register("chat", name, spec=spec, provenance=provenance)
    ctx.store.add_event(job.id, f"registered as candidate chat v{version.id}")
    return ctx.store.update(job.id, candidate_version_id=version.id)


def poll_once(ctx: FineTuneContext, job_id: int) -> FineTuneJob:
    """One look at an `openai` job: act on a pending cancel, store status and events, register
    the model when it succeeded."""
    job = ctx.store.job(job_id)
    if job.done:
        return finish(ctx, job)
    backend = ctx.backend(job.backend)
    if job.cancel_requested:
        job = backend.cancel(job)
    job = backend.poll(job)
    return finish(ctx, job)


def monitor(
    ctx: FineTuneContext,
    job_id: int,
    sleep: Callable[[float], None] = time.sleep,
    max_polls: int | None = None,
    on_poll: Callable[[FineTuneJob], None] | None = None,
) -> FineTuneJob:
    """Watch a job until it is final (or `max_polls`). A `local` job found unfinished with no
    live trainer (its process died) is trained again from its last checkpoint. Returns at once,
    unchanged, when another live process is watching it."""
    interval = ctx.settings.finetune.poll_interval_s
    polls = 0
    while True:
        job = ctx.store.job(job_id)
        if job.done:
            return finish(ctx, job)
        if not ctx.store.claim(job_id, ctx.holder, max(LEASE_S, 3 * interval)):
            return job
        if job.backend == "local":
            return run_local(ctx, job_id)
        if job.external_id is None:  # its launcher died before OpenAI had the job: no key needed
            return ctx.store.update(
                job_id,
                status="failed",
                error="the launch stopped before the job reached OpenAI; launch the dataset again",
            )
        job = poll_once(ctx, job_id)
        polls += 1
        if on_poll is not None:
            on_poll(job)
        if job.done or (max_polls is not None and polls >= max_polls):
            ctx.store.release(job_id, ctx.holder)
            return job
        sleep(interval)


def resume(
    ctx: FineTuneContext,
    sleep: Callable[[float], None] = time.sleep,
    max_polls: int | None = None,
) -> list[FineTuneJob]:
    """Pick up every unfinished job (after a restart): poll `openai` ones, re-train `local` ones
    whose trainer is gone. A job that cannot be resumed (its key was removed, its base model
    folder is gone) is marked failed with the reason, once, so the next start does not try it
    again; the other jobs are resumed all the same."""
    resumed = []
    for job in ctx.store.unfinished():
        try:
            resumed.append(monitor(ctx, job.id, sleep, max_polls))
        except RagError as exc:
            log.warning("fine-tuning job %s cannot be resumed: %s", job.id, exc)
            resumed.append(ctx.store.update(job.id, status="failed", error=f"not resumed: {exc}"))
        except Exception as exc:
            log.exception("fine-tuning job %s cannot be resumed", job.id)
            error = f"not resumed: {type(exc).__name__}: {str(exc)[:300]}"
            resumed.append(ctx.store.update(job.id, status="failed", error=error))
    return resumed


def resume_in_background(
    ctx: FineTuneContext, sleep: Callable[[float], None] = time.sleep
) -> threading.Thread | None:
    """`resume` on a daemon thread, for a process that serves something else (the app after a
    restart); None when no job is unfinished. A failure is logged, never raised."""
    if not ctx.store.unfinished():
        return None

    def run() -> None:
        try:
            resume(ctx, sleep)
        except Exception:  # the app keeps serving; the jobs table shows each job's state
            log.exception("could not resume the unfinished fine-tuning jobs")

    thread = threading.Thread(target=run, name="finetune-resume", daemon=True)
    thread.start()
    return thread


def cancel(ctx: FineTuneContext, job_id: int) -> FineTuneJob:
    """Cancel a job: an `openai` job at the provider now; a `local` job by flagging it, which its
    trainer sees after the current step (or at once when no trainer is running)."""
    job = ctx.store.request_cancel(job_id)

    def cancelled() -> FineTuneJob:  # nothing is running it: it ends here
        ctx.store.add_event(job_id, "cancelled by an admin")
        return ctx.store.update(job_id, status="cancelled", error="cancelled by an admin")

    if job.backend == "openai":
        if job.external_id is None:  # it never reached the provider: nothing to call
            return cancelled()
        return ctx.backend("openai").cancel(job)
    # Claimed under a holder of its own: a trainer of this very process holds the job under
    # ctx.holder (renewed while it trains), and a claim under that would always succeed.
    checker = f"{ctx.holder}:cancel"
    if ctx.store.claim(job_id, checker, 1.0):  # nobody trains it: nothing will see the flag
        ctx.store.release(job_id, checker)
        return cancelled()
    return job
