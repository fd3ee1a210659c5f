"""One function per fine-tuning admin action, called alike by the command line
(`python -m finetune`) and the Fine-tune tab: build a dataset, validate it with its cost, launch,
cancel and resume jobs. The checks and the messages are these; the CLI and the tab only gather
arguments and show results in their own words. A refused action leaves nothing behind."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import RagError
from core.wording import counted
from finetune.dataset import MODES

if TYPE_CHECKING:
    from core.jobstore import DatasetRecord, FineTuneJob
    from core.settings import Settings
    from finetune.context import FineTuneContext
    from finetune.dataset import BuildResult
    from finetune.validate import CostEstimate, ValidationReport

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (done so far, total when known)


def teacher_configured(settings: Settings) -> bool:
    return settings.finetune.teacher.ready


def default_mode(settings: Settings) -> str:
    """The teacher mode that works on this configuration: `grade` with a teacher, else `none`."""
    return "grade" if teacher_configured(settings) else "none"


@dataclass
class BuildRequest:
    """What to build a chat dataset from, and how. None means: the setting's value."""

    name: str | None = None
    mode: str | None = None  # none | grade | distill | relabel; default: default_mode()
    feedback: str = "all"
    since: datetime | None = None
    until: datetime | None = None
    chat_version_id: int | None = None
    include_failed: bool = False
    min_answer_chars: int | None = None
    near_duplicates: bool = True
    dedup_similarity: float | None = None
    grade_threshold: float | None = None
    validation_share: float | None = None
    # A `datasets` source instead of the chat log:
    dataset: str | None = None
    question_field: str = "question"
    answer_field: str = "correct_answer"
    explanation_field: str | None = "support"
    context_field: str | None = None
    split: str | None = None
    limit: int | None = None


@dataclass
class BuiltDataset:
    record: DatasetRecord
    result: BuildResult

    def summary(self) -> str:
        card = self.result.card
        drops = ", ".join(f"{k} {n}" for k, n in card.dropped.items()) or "none"
        redacted = ", ".join(f"{k} {n}" for k, n in card.redactions.items()) or "none"
        return (
            f"dataset {self.record.id} {card.name!r}: kept {card.kept} of {card.seen} (dropped: "
            f"{drops}); {card.train_examples} train / {card.validation_examples} validation, "
            f"{card.preference_pairs} preference pairs; redacted: {redacted}; teacher "
            f"{card.teacher_model or 'none'}; hash {card.content_hash[:12]}"
        )


def build_chat_dataset(
    ctx: FineTuneContext, request: BuildRequest, progress: Progress | None = None
) -> BuiltDataset:
    """Training data from the chat log (or a `datasets` source), checked by the teacher when the
    mode has one, written to the datasets folder and recorded in the job store. Raises RagError
    (nothing written) when it cannot be built as asked."""
    from finetune.dataset import BuildOptions, TurnFilter, build_dataset
    from finetune.dedup import embedder
    from finetune.teacher import Teacher, connect_teacher
    from finetune.turns import turns_from_dataset, turns_from_log
    from rag.prompt import system_prompt

    settings = ctx.settings
    ft = settings.finetune
    mode = request.mode or default_mode(settings)
    if mode not in MODES:
        raise RagError(f"unknown teacher mode {mode!r}; known: {', '.join(MODES)}")
    if mode != "none" and not teacher_configured(settings):
        raise RagError(
            f"teacher mode {mode!r} needs a teacher model, and none is configured: choose "
            "teacher mode 'none' (the logged answers as they are), or set "
            "RAG_FINETUNE__TEACHER__MODEL with OPENAI_API_KEY or RAG_FINETUNE__TEACHER__BASE_URL"
        )
    options = BuildOptions(
        name=(request.name or "").strip() or datetime.now(UTC).strftime("ds-%Y%m%d-%H%M%S"),
        mode=mode,  # type: ignore[arg-type]
        grade_threshold=request.grade_threshold or ft.teacher.grade_threshold,
        dedup_similarity=(request.dedup_similarity or ft.dedup_similarity)
        if request.near_duplicates
        else None,
        validation_share=ft.validation_share
        if request.validation_share is None
        else request.validation_share,
        seed=ft.seed,
        concurrency=ft.teacher.concurrency,
    )
    filt = TurnFilter(
        since=request.since,
        until=request.until,
        feedback=request.feedback,
        chat_version_id=request.chat_version_id,
        answered_only=not request.include_failed,
        min_answer_chars=ft.min_answer_chars
        if request.min_answer_chars is None
        else request.min_answer_chars,
    )
    prompt = system_prompt(settings)
    teacher = Teacher(connect_teacher(ft.teacher), prompt.text) if mode != "none" else None
    if request.dataset:
        turns = turns_from_dataset(
            request.dataset,
            request.question_field,
            request.answer_field,
            request.explanation_field or None,
            request.context_field,
            request.split,
            request.limit,
        )
        total, source = request.limit, request.dataset
    else:
        from core.chatlog import ChatLog

        chatlog = ChatLog(ctx.store.db)
        turns = turns_from_log(chatlog, filt)
        # What the filters read (the bar's total), not every turn of the log.
        total = chatlog.count_turns(
            since=filt.since,
            feedback=filt.feedback,
            until=filt.until,
            chat_version_id=filt.chat_version_id,
        )
        source = "chatlog"
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    result = build_dataset(
        turns,
        settings.finetune_dir / "datasets",
        options,
        prompt.text,
        teacher=teacher,
        embed=None if options.dedup_similarity is None else embedder(settings),
        filters=filt,
        source=source,
        plain_questions=bool(request.dataset) and not request.context_field,
        prompt_version=prompt.version,
        progress=tick,
    )
    card = result.card
    if not card.kept:
        # Nothing to train on: nothing is recorded (a dataset id that every launch refuses
        # would only be left behind), and the refusal says why each turn was dropped.
        shutil.rmtree(result.path, ignore_errors=True)
        why = ", ".join(
            f"{reason.replace('_', ' ')} {n}" for reason, n in sorted(card.dropped.items())
        )
        if card.dropped.get("extractive_answer"):
            # Rating quoted answers up cannot help: no quote is ever a written answer's target.
            advice = (
                "answers quoted from the documents (no language model) are never a chat model's "
                "targets: answer with a language model, let a teacher write the answers (mode "
                "distill or relabel), or fine-tune the embedding model, which needs neither"
            )
        else:
            advice = "rate answers up in the chat, or change the filters or the teacher mode"
        raise RagError(
            (
                "the 1 turn read was not kept"
                if card.seen == 1
                else f"none of the {counted(card.seen, 'turn')} read was kept"
            )
            + (f" (dropped: {why})" if why else "")
            + f": {advice}"
        )
    return BuiltDataset(ctx.store.save_dataset(card, str(result.path)), result)


@dataclass
class Validation:
    report: ValidationReport
    cost: CostEstimate
    model: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.report.summary()}; {self.cost.summary()} on {self.model}"


def validate_dataset(
    ctx: FineTuneContext,
    dataset_id: int | None = None,
    file: Path | None = None,
    backend: str | None = None,
    method: str | None = None,
    base_model: str | None = None,
) -> Validation:
    """Format errors by line, token counts and the cost estimate of a stored dataset's training
    file (or any chat-format JSONL file) for this backend, method and base model."""
    from finetune.jobs import base_model_of, check_dataset, check_file

    settings = ctx.settings
    backend = backend or settings.finetune.backend
    method = method or settings.finetune.method
    model = base_model_of(settings, backend, base_model)
    if file is not None:
        report, cost = check_file(settings, file, backend, method, model)
    elif dataset_id is not None:
        report, cost = check_dataset(
            settings, ctx.store.dataset(dataset_id), backend, method, model
        )
    else:
        raise RagError("choose a dataset (its id) or a JSONL file to validate")
    if backend == "openai":
        # What Launch would refuse before creating a job, said now: a valid file is not yet a
        # job the provider takes.
        from finetune.jobs import openai_preflight

        refused = openai_preflight(ctx, model)
        if refused is not None:
            report.warnings.append(f"Launch will be refused: {refused}")
    return Validation(report, cost, model)


def launch_job(
    ctx: FineTuneContext,
    dataset_id: int,
    backend: str | None = None,
    method: str | None = None,
    base_model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> FineTuneJob:
    """Validate and start a job (see finetune.jobs.launch). Everything the job needs (a valid
    training file, a base model folder for `local`, credentials for `openai`) is checked before
    the job is created, so a refusal leaves no job behind."""
    from finetune.jobs import launch

    return launch(ctx, dataset_id, backend, method, base_model, progress=progress, wait=wait)


def cancel_job(ctx: FineTuneContext, job_id: int) -> FineTuneJob:
    """Cancel a job; one that never reached its provider is cancelled here, needing no key."""
    from finetune.jobs import cancel

    return cancel(ctx, job_id)


def resume_jobs(ctx: FineTuneContext) -> list[FineTuneJob]:
    """Pick up every unfinished job after a restart (see finetune.jobs.resume)."""
    from finetune.jobs import resume

    return resume(ctx)
