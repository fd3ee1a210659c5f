"""What every local training job does while it trains, whichever model it trains (a LoRA chat
model, the embedding model): per-step losses into the job's events, an admin's cancel seen after
the step, the compute gate held one step at a time (in a process that also answers questions),
progress for a bar, and the job's claim kept alive so that no other process trains it too."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import RagError

if TYPE_CHECKING:
    from core.compute import ComputeGate
    from core.jobstore import FineTuneJob, JobStore

log = logging.getLogger(__name__)

METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}
# Seconds a process's claim on a job lasts unless renewed: a crashed trainer's job is free again
# after this long, for a restarted process to resume.
LEASE_S = 120.0
# The metric of a training job's first event: how many steps it trains in all.
TOTAL_STEPS = "total_steps"
FROM_STEP = "from_step"  # and the step it starts from (0, or where a resumed run goes on)


class TrainingContext(Protocol):
    """What a training run needs of the process that runs it (a FineTuneContext)."""

    store: JobStore
    gate: ComputeGate | None
    holder: str


class Cancelled(Exception):
    """Training stopped because an admin cancelled the job."""


def job_callback(
    store: JobStore,
    job_id: int,
    gate: ComputeGate | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """A transformers TrainerCallback (sentence-transformers' and TRL's trainers take it) that
    watches the job; call its `release()` when training ends, however it ends."""
    from transformers import TrainerCallback

    held = ExitStack()

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # Said before the first step, which can take minutes: the job is under way, and
            # the jobs table counts its steps against this total.
            done = f", from step {state.global_step}" if state.global_step else ""
            store.add_event(
                job_id,
                f"training {state.max_steps} steps{done}",
                step=None,
                metrics={
                    TOTAL_STEPS: float(state.max_steps),
                    FROM_STEP: float(state.global_step),
                },
            )

        def on_step_begin(self, args, state, control, **kwargs):
            if gate is not None:
                held.enter_context(gate.hold())

        def on_step_end(self, args, state, control, **kwargs):
            held.close()
            if store.job(job_id).cancel_requested:
                control.should_training_stop = True
            if progress is not None:
                progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            metrics = {
                METRIC_NAMES.get(k, k): float(v)
                for k, v in (logs or {}).items()
                if isinstance(v, int | float) and k in (*METRIC_NAMES, "learning_rate")
            }
            if any(k in metrics for k in ("train_loss", "valid_loss")):
                store.add_event(
                    job_id, f"step {state.global_step}", step=state.global_step, metrics=metrics
                )

        def release(self) -> None:
            held.close()  # a step that raised still lets the gate go

    return Watch()


@contextmanager
def claim_kept(store: JobStore, job_id: int, holder: str, lease_s: float) -> Iterator[None]:
    """Renew this process's claim on the job while the block runs, however long one step takes;
    a crash lets the claim run out, so a restarted process resumes the job."""
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 4):
            store.claim(job_id, holder, lease_s)

    beat = threading.Thread(target=heartbeat, daemon=True, name=f"ft-lease-{job_id}")
    beat.start()
    try:
        yield
    finally:
        stop.set()


def run_job(
    store: JobStore, job_id: int, holder: str, what: str, train: Callable[[], FineTuneJob]
) -> FineTuneJob:
    """Run a local training job's `train` and end the job with its outcome: as `train` left it,
    cancelled, or failed with the reason (a RagError's words; another error's type and message,
    logged with its traceback); the job's claim is released either way."""
    try:
        return train()
    except Cancelled:
        store.add_event(job_id, "cancelled by an admin: stopped after the step under way")
        return store.update(job_id, status="cancelled", error="cancelled by an admin")
    except RagError as exc:
        return store.update(job_id, status="failed", error=str(exc))
    except Exception as exc:  # training failed: the job keeps the reason, the tab shows it
        log.exception("%s job %s failed", what, job_id)
        return store.update(
            job_id, status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}"
        )
    finally:
        store.release(job_id, holder)


def start_training(store: JobStore, job_id: int, folder: Path) -> tuple[Path, Path]:
    """Mark a local training job running and return its checkpoint and model folders under
    `folder`; the job's events say when it resumes from a checkpoint left by a stopped run."""
    checkpoints, out = folder / "trainer", folder / "model"
    if checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")):
        store.add_event(job_id, "resuming from the last checkpoint")
    store.update(job_id, status="running")
    return checkpoints, out


def train_watched(
    ctx: TrainingContext,
    job: FineTuneJob,
    trainer: Callable[..., Any],
    *,
    pairs: Any,
    out: Path,
    config: Any,
    checkpoints: Path,
    max_steps: int | None,
    progress: Callable[[int, int], None] | None,
    lease_s: float = LEASE_S,
) -> Any:
    """Train the job's model from its base model folder with `trainer` (the embedding model's or
    the reranker's: `trainer(base, pairs, out, config, ...)`, which returns the steps and seconds
    it trained), with the job's watch as its callback and the job's claim kept alive; raises
    Cancelled when an admin cancelled the job meanwhile, and notes what it trained in the job's
    events."""
    watch = job_callback(ctx.store, job.id, ctx.gate, progress)
    try:
        with claim_kept(ctx.store, job.id, ctx.holder, lease_s):
            result = trainer(
                Path(job.base_model),
                pairs,
                out,
                config,
                progress=False,
                checkpoints=checkpoints,
                callbacks=[watch],
                max_steps=max_steps,
            )
    finally:
        watch.release()
    if ctx.store.job(job.id).cancel_requested:
        raise Cancelled()
    ctx.store.add_event(job.id, f"trained {result.steps} steps in {result.seconds:.0f} s -> {out}")
    return result
