"""The "Fine-tune" admin tab, chat model: build a dataset from the chat log with filters, preview
the kept and dropped turns with the teacher's grades and reasons, validate with the cost estimate,
launch a job, follow the jobs table with events and a loss plot, cancel. Handlers only gather
the fields and show results: each action is one finetune.service function, the one the command
line calls; a refusal is a toast and leaves the page as it was."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.markup import FEEDBACK_CHOICES, one_line
from app.notices import check_password, handled
from core.dates import parse_since
from core.errors import RagError

if TYPE_CHECKING:
    from core.compute import ComputeGate
    from core.jobstore import JobStore
    from core.registry import Registry
    from core.settings import Settings
    from finetune.context import FineTuneContext

log = logging.getLogger(__name__)
PREVIEW_COLUMNS = [
    "turn",
    "kept",
    "reason",
    "split",
    "feedback",
    "faithful",
    "correct",
    "helpful",
    "target",
    "question",
    "answer",
]
MODE_HELP = {
    "none": "the logged answers as they are (no teacher needed; answers quoted without a "
    "language model are left out)",
    "grade": "a teacher model grades each answer; low grades are dropped",
    "distill": "a teacher model answers each question itself",
    "relabel": "a teacher model rewrites the answers it grades low",
}


def preview_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Preview rows (kept and dropped turns) as table rows."""
    out = []
    for r in rows:
        grade = r.get("grade") or {}
        out.append(
            [
                r.get("turn_id"),
                "kept" if r.get("kept") else "dropped",
                r.get("reason") or "",
                r.get("split") or "",
                r.get("feedback") or "",
                grade.get("faithfulness", ""),
                grade.get("correctness", ""),
                grade.get("helpfulness", ""),
                r.get("target") or "",
                r.get("question", ""),
                one_line(r.get("answer") or "")[:200],
            ]
        )
    return out


def _whole(value: float | None, what: str) -> int:
    # An id box left empty sends 0 (or nothing): ids start at 1.
    if value is None or value != value or value < 1:
        raise RagError(f"type {what} first")
    return int(value)


class FineTuneTab:
    """The tab's actions; `build()` lays them out (called inside the app's Blocks)."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        registry: Registry,
        admin_password: str | None,
        openai_client: Any = None,
        gate: ComputeGate | None = None,
    ):
        from finetune.context import FineTuneContext

        self.settings = settings
        self.ctx: FineTuneContext = FineTuneContext(
            settings, store, registry, openai_client=openai_client, gate=gate
        )
        self.admin_password = admin_password
        self.threads: dict[int, threading.Thread] = {}

    def check(self, password: str | None) -> None:
        check_password(self.admin_password, password)

    # -- actions -------------------------------------------------------------------------------

    @handled(3)
    def build_dataset(
        self,
        name: str,
        mode: str,
        feedback: str,
        since: str,
        until: str,
        chat_version: float | None,
        min_chars: float | None,
        threshold: float,
        near_dups: bool,
        password: str,
        progress: Any = None,
    ) -> tuple[str, list[list[Any]], int | None]:
        """Build from the chat log; (summary, preview rows, dataset id)."""
        self.check(password)
        from finetune.service import BuildRequest, build_chat_dataset

        request = BuildRequest(
            name=name,
            mode=mode,
            feedback=feedback,
            since=parse_since(since),
            until=parse_since(until),
            chat_version_id=int(chat_version) if chat_version else None,
            min_answer_chars=None if min_chars is None else int(min_chars),
            near_duplicates=near_dups,
            grade_threshold=threshold,
        )

        def tick(done: int, total: int | None) -> None:
            if progress is not None:
                progress((done, total or None), desc="turns", unit="turns")

        built = build_chat_dataset(self.ctx, request, tick)
        card = built.result.card
        drops = ", ".join(f"{k}: {n}" for k, n in card.dropped.items()) or "none"
        redacted = ", ".join(f"{k}: {n}" for k, n in card.redactions.items()) or "none"
        summary = (
            f"**Dataset {built.record.id}** `{card.name}`: kept **{card.kept}** of {card.seen} "
            f"turns ({card.train_examples} train / {card.validation_examples} validation, "
            f"{card.preference_pairs} preference pairs).\n\nDropped: {drops}.\n\n"
            f"Redacted: {redacted}. Teacher: {card.teacher_model or 'none'}. "
            f"Hash `{card.content_hash[:12]}`."
        )
        rows = [r.as_json() for r in built.result.preview]
        return summary, preview_table(rows), built.record.id

    @handled(1, cleared=True)
    def validate(
        self, dataset_id: float | None, backend: str, method: str, base_model: str, password: str
    ) -> str:
        """Validation errors and warnings, and the cost estimate, as Markdown. Refused, the panel
        is emptied: a report on another dataset or backend left there would mislead."""
        self.check(password)
        from finetune.service import validate_dataset

        checked = validate_dataset(
            self.ctx,
            _whole(dataset_id, "a dataset id (build one above)"),
            None,
            backend,
            method,
            base_model or None,
        )
        report = checked.report
        lines = [
            f"**{report.summary()}**",
            "",
            f"Cost estimate on `{checked.model}`: {checked.cost.summary()}",
        ]
        if report.errors:
            lines += ["", "| line | error | detail |", "|---|---|---|"]
            lines += [f"| {e.line} | {e.kind} | {e.message} |" for e in report.errors[:50]]
        lines += [f"- ⚠️ {w}" for w in report.warnings]
        return "\n".join(lines)

    @handled(2)
    def launch(
        self, dataset_id: float | None, backend: str, method: str, base_model: str, password: str
    ) -> tuple[str, list[list[Any]]]:
        """Start a job: an `openai` job is created now; a `local` one trains in a background
        thread of this process (its progress shows in the jobs table)."""
        self.check(password)
        from finetune.service import launch_job

        job = launch_job(
            self.ctx,
            _whole(dataset_id, "a dataset id (build one above)"),
            backend,
            method,
            base_model or None,
            wait=False,
        )
        if job.backend == "local":
            self.train_in_background(job.id)
        return f"Job {job.id} started on `{job.backend}` ({job.status}).", self._jobs()

    def train_in_background(self, job_id: int) -> None:
        """Train a created `local` job (any model) on a thread of this process; its progress and
        outcome show in the jobs table."""
        thread = threading.Thread(
            target=self._train, args=(job_id,), daemon=True, name=f"ft-{job_id}"
        )
        self.threads[job_id] = thread
        thread.start()

    def _train(self, job_id: int) -> None:
        from finetune.jobs import run_local

        try:
            run_local(self.ctx, job_id)
        except Exception:  # the job row keeps the reason; nothing else to tell here
            log.exception("fine-tuning job %s failed", job_id)

    def _jobs(self) -> list[list[Any]]:
        from finetune.report import job_row

        store = self.ctx.store
        return [
            job_row(j, store.events(j.id) if j.status == "running" else None) for j in store.jobs()
        ]

    @handled(1)
    def jobs(self, password: str) -> list[list[Any]]:
        self.check(password)
        return self._jobs()

    @handled(3)
    def show(self, job_id: float | None, password: str):
        """A job's events and loss plot; an unfinished `openai` job is polled first."""
        self.check(password)
        from finetune.jobs import poll_once
        from finetune.report import events_markdown, loss_figure

        job = self.ctx.store.job(_whole(job_id, "a job id from the table"))
        if job.backend == "openai" and not job.done:
            job = poll_once(self.ctx, job.id)
        events = self.ctx.store.events(job.id)
        figure = loss_figure(self.ctx.store.metrics(job.id), f"Job {job.id}: loss per step")
        return events_markdown(events), figure, self._jobs()

    @handled(2)
    def cancel(self, job_id: float | None, password: str) -> tuple[str, list[list[Any]]]:
        self.check(password)
        from finetune.service import cancel_job

        job = cancel_job(self.ctx, _whole(job_id, "a job id from the table"))
        note = "cancelled" if job.done else "cancel requested; the trainer stops after this step"
        return f"Job {job.id}: {note}.", self._jobs()

    # -- layout --------------------------------------------------------------------------------

    def build(self) -> None:
        from finetune.report import JOB_COLUMNS
        from finetune.service import default_mode, teacher_configured

        ft = self.settings.finetune
        mode_default = default_mode(self.settings)
        with gr.Tab("Fine-tune") as tab:
            password = gr.Textbox(
                label="Admin password", type="password", visible=self.admin_password is not None
            )
            gr.Markdown("## Chat model\n### 1. Build a dataset from the chat log")
            teacher_note = (
                "A teacher model is configured."
                if teacher_configured(self.settings)
                else "No teacher model is configured (RAG_FINETUNE__TEACHER__MODEL), so only "
                "mode **none** works here. It keeps answers a language model wrote; answers quoted "
                "without one (extracted passages) teach a chat model nothing and are left out."
            )
            gr.Markdown(
                teacher_note
                + " Modes: "
                + "; ".join(f"**{m}**: {help}" for m, help in MODE_HELP.items())
                + "."
            )
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="default: a time stamp")
                mode = gr.Radio(list(MODE_HELP), value=mode_default, label="Teacher mode")
                feedback = gr.Radio(list(FEEDBACK_CHOICES), value="all", label="Feedback")
            with gr.Row():
                since = gr.Textbox(label="Since (ISO date)")
                until = gr.Textbox(label="Until (ISO date)")
                version = gr.Number(label="Chat version", precision=0)
                min_chars = gr.Number(
                    label="Shortest answer (chars)", value=ft.min_answer_chars, precision=0
                )
                threshold = gr.Slider(
                    1, 5, value=ft.teacher.grade_threshold, step=0.5, label="Keep grades from"
                )
                near = gr.Checkbox(value=True, label="Drop near-duplicate questions")
            build_btn = gr.Button("Build dataset", variant="primary", elem_id="ft-build")
            built = gr.Markdown(elem_id="ft-built")
            preview = gr.Dataframe(
                headers=PREVIEW_COLUMNS,
                label="Kept and dropped turns (first 500)",
                interactive=False,
                elem_id="ft-preview",
            )
            gr.Markdown(
                "### 2. Validate and launch\n**local** trains a LoRA adapter on this machine and "
                "needs a Hugging Face causal LM folder here as the base model; **openai** runs "
                "an OpenAI or Azure OpenAI job with the chat model's key."
            )
            with gr.Row():
                dataset = gr.Number(label="Dataset id", precision=0, elem_id="ft-dataset")
                backend = gr.Radio(["local", "openai"], value=ft.backend, label="Backend")
                method = gr.Radio(["supervised", "dpo"], value=ft.method, label="Method")
                base = gr.Textbox(
                    label="Base model",
                    value=ft.base_model or "",
                    placeholder="local: a model folder on this machine; openai: a model name",
                )
            with gr.Row():
                validate_btn = gr.Button("Validate and estimate cost", elem_id="ft-validate")
                launch_btn = gr.Button("Launch", variant="primary", elem_id="ft-launch")
            checked = gr.Markdown(elem_id="ft-checked")
            from app.embedding_section import EmbeddingSection, latest_pairs

            embedding = EmbeddingSection(self)
            wire_embedding = embedding.build(password)
            from app.reranker_section import RerankerSection

            wire_reranker = RerankerSection(self).build(password, pairs=embedding.dataset)
            gr.Markdown("## Jobs")
            refresh = gr.Button("Refresh", elem_id="ft-refresh")
            jobs = gr.Dataframe(
                headers=JOB_COLUMNS,
                label="Jobs (newest first)",
                interactive=False,
                elem_id="ft-jobs",
            )
            with gr.Row():
                job_id = gr.Number(label="Job id", precision=0, elem_id="ft-job-id")
                show_btn = gr.Button("Events and loss", elem_id="ft-show")
                cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="ft-cancel")
            note = gr.Markdown(elem_id="ft-note")
            with gr.Row():
                events = gr.Markdown(elem_id="ft-events")
                loss = gr.Plot(label="Loss")
            wire_embedding(jobs, job_id)
            wire_reranker(jobs, job_id)
            private = {"api_visibility": "private"}  # the tab's own; the CLI is the script API

            def on_open(pw: str, pairs: float | None):
                if self.admin_password is not None and not pw:
                    return gr.skip(), gr.skip()
                # An empty pairs id opens on the newest pairs (after a reload too); the reranker
                # section's follows it.
                newest = None if pairs else latest_pairs(self.ctx)
                return self.jobs(pw), newest if newest is not None else gr.skip()

            tab.select(on_open, [password, embedding.dataset], [jobs, embedding.dataset], **private)

            def on_build(n, m, f, s, u, v, c, t, nd, pw, progress=gr.Progress()):  # noqa: B008
                return self.build_dataset(n, m, f, s, u, v, c, t, nd, pw, progress)

            build_btn.click(
                on_build,
                [name, mode, feedback, since, until, version, min_chars, threshold, near, password],
                [built, preview, dataset],
                **private,
            )
            choice = [dataset, backend, method, base, password]
            validate_btn.click(self.validate, choice, checked, **private)
            launch_btn.click(self.launch, choice, [checked, jobs], **private)
            refresh.click(self.jobs, [password], jobs, **private)
            show_btn.click(self.show, [job_id, password], [events, loss, jobs], **private)
            cancel_btn.click(self.cancel, [job_id, password], [note, jobs], **private)


def build_finetune_tab(
    settings: Settings,
    store: JobStore,
    registry: Registry,
    admin_password: str | None,
    gate: ComputeGate | None = None,
) -> Callable[[], None]:
    """A builder for the tab, called inside the app's Blocks (see app.ui.build_ui)."""
    return FineTuneTab(settings, store, registry, admin_password, gate=gate).build
