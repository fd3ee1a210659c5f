"""The "Fine-tune" admin tab: build a dataset from the chat log with filters, preview the kept and
dropped turns with the teacher's grades and reasons, validate with the cost estimate, launch a job,
follow the jobs table with events and a loss plot, cancel. Handlers stay thin: the work is
finetune's, the stores are core's; a finished job's candidate shows in the Evaluate tab."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gradio as gr

from core.errors import RagError

if TYPE_CHECKING:
    from core.jobstore import JobStore
    from core.registry import Registry
    from core.settings import Settings
    from finetune.jobs import FineTuneContext

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
                (r.get("answer") or "")[:200],
            ]
        )
    return out


class FineTuneTab:
    """The tab's actions; `build()` lays them out (called inside the app's Blocks)."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        registry: Registry,
        admin_password: str | None,
        openai_client: Any = None,
    ):
        from finetune.jobs import FineTuneContext

        self.settings = settings
        self.ctx: FineTuneContext = FineTuneContext(
            settings, store, registry, openai_client=openai_client
        )
        self.admin_password = admin_password
        self.threads: dict[int, threading.Thread] = {}

    def check(self, password: str | None) -> None:
        if self.admin_password is not None and not hmac.compare_digest(
            (password or "").encode(), self.admin_password.encode()
        ):
            raise gr.Error("wrong admin password")

    # -- actions -------------------------------------------------------------------------------

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
        from core.chatlog import ChatLog
        from core.dates import parse_since
        from finetune.dataset import (
            BuildOptions,
            TurnFilter,
            build_dataset,
            embedder,
            turns_from_log,
        )
        from rag.prompt import system_prompt

        ft = self.settings.finetune
        try:
            filt = TurnFilter(
                since=parse_since(since),
                until=parse_since(until),
                feedback=feedback,
                chat_version_id=int(chat_version) if chat_version else None,
                min_answer_chars=ft.min_answer_chars if min_chars is None else int(min_chars),
            )
            options = BuildOptions(
                name=(name or "").strip() or datetime.now(UTC).strftime("ds-%Y%m%d-%H%M%S"),
                mode=mode,  # type: ignore[arg-type]
                grade_threshold=threshold,
                dedup_similarity=ft.dedup_similarity if near_dups else None,
                validation_share=ft.validation_share,
                seed=ft.seed,
                concurrency=ft.teacher.concurrency,
            )
            prompt = system_prompt(self.settings)
            teacher = None
            if mode != "none":
                from finetune.teacher import Teacher, connect_teacher

                teacher = Teacher(connect_teacher(ft.teacher), prompt.text)
            chatlog = ChatLog(self.ctx.store.db)  # type: ignore[arg-type]  # shares the engine
            total = chatlog.count_turns()
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                if progress is not None:
                    progress((done[0], total or None), desc="turns", unit="turns")

            result = build_dataset(
                turns_from_log(chatlog, filt),
                self.settings.finetune_dir / "datasets",
                options,
                prompt.text,
                teacher=teacher,
                embed=embedder(self.settings) if near_dups else None,
                filters=filt,
                prompt_version=prompt.version,
                progress=tick,
            )
        except RagError as exc:
            raise gr.Error(str(exc)) from exc
        record = self.ctx.store.save_dataset(result.card, str(result.path))
        card = result.card
        drops = ", ".join(f"{k}: {n}" for k, n in card.dropped.items()) or "none"
        redacted = ", ".join(f"{k}: {n}" for k, n in card.redactions.items()) or "none"
        summary = (
            f"**Dataset {record.id}** `{card.name}`: kept **{card.kept}** of {card.seen} turns "
            f"({card.train_examples} train / {card.validation_examples} validation, "
            f"{card.preference_pairs} preference pairs).\n\nDropped: {drops}.\n\n"
            f"Redacted: {redacted}. Teacher: {card.teacher_model or 'none'}. "
            f"Hash `{card.content_hash[:12]}`."
        )
        rows = [r.as_json() for r in result.preview]
        return summary, preview_table(rows), record.id

    def validate(
        self, dataset_id: float | None, backend: str, method: str, base_model: str, password: str
    ) -> str:
        """Validation errors and warnings, and the cost estimate, as Markdown."""
        self.check(password)
        if not dataset_id:
            raise gr.Error("build a dataset or type its id first")
        from finetune.jobs import base_model_of, check_dataset

        try:
            model = base_model_of(self.settings, backend, base_model or None)
            dataset = self.ctx.store.dataset(int(dataset_id))
            report, cost = check_dataset(self.settings, dataset, backend, method, model)
        except RagError as exc:
            raise gr.Error(str(exc)) from exc
        lines = [f"**{report.summary()}**", "", f"Cost estimate on `{model}`: {cost.summary()}"]
        if report.errors:
            lines += ["", "| line | error | detail |", "|---|---|---|"]
            lines += [f"| {e.line} | {e.kind} | {e.message} |" for e in report.errors[:50]]
        lines += [f"- ⚠️ {w}" for w in report.warnings]
        return "\n".join(lines)

    def launch(
        self, dataset_id: float | None, backend: str, method: str, base_model: str, password: str
    ) -> tuple[str, list[list[Any]]]:
        """Start a job: an `openai` job is created now; a `local` one trains in a background
        thread of this process (its progress shows in the jobs table)."""
        self.check(password)
        if not dataset_id:
            raise gr.Error("build a dataset or type its id first")
        from finetune.jobs import launch, run_local

        try:
            job = launch(self.ctx, int(dataset_id), backend, method, base_model or None, wait=False)
        except RagError as exc:
            raise gr.Error(str(exc)) from exc
        if job.backend == "local":
            thread = threading.Thread(
                target=self._train, args=(run_local, job.id), daemon=True, name=f"ft-{job.id}"
            )
            self.threads[job.id] = thread
            thread.start()
        return f"Job {job.id} started on `{job.backend}` ({job.status}).", self.jobs(password)

    def _train(self, run_local: Callable[..., Any], job_id: int) -> None:
        try:
            run_local(self.ctx, job_id)
        except Exception:  # the job row keeps the reason; nothing else to tell here
            log.exception("fine-tuning job %s failed", job_id)

    def jobs(self, password: str) -> list[list[Any]]:
        self.check(password)
        from finetune.report import job_row

        return [job_row(j) for j in self.ctx.store.jobs()]

    def show(self, job_id: float | None, password: str):
        """A job's events and loss plot; an unfinished `openai` job is polled first."""
        self.check(password)
        if not job_id:
            raise gr.Error("type a job id from the table")
        from finetune.jobs import poll_once
        from finetune.report import events_markdown, loss_figure

        try:
            job = self.ctx.store.job(int(job_id))
            if job.backend == "openai" and not job.done:
                job = poll_once(self.ctx, job.id)
        except RagError as exc:
            raise gr.Error(str(exc)) from exc
        events = self.ctx.store.events(job.id)
        figure = loss_figure(self.ctx.store.metrics(job.id), f"Job {job.id}: loss per step")
        return events_markdown(events), figure, self.jobs(password)

    def cancel(self, job_id: float | None, password: str) -> tuple[str, list[list[Any]]]:
        self.check(password)
        if not job_id:
            raise gr.Error("type a job id from the table")
        from finetune.jobs import cancel

        try:
            job = cancel(self.ctx, int(job_id))
        except RagError as exc:
            raise gr.Error(str(exc)) from exc
        note = "cancelled" if job.done else "cancel requested; the trainer stops after this step"
        return f"Job {job.id}: {note}.", self.jobs(password)

    # -- layout --------------------------------------------------------------------------------

    def build(self) -> None:
        from finetune.report import JOB_COLUMNS

        ft = self.settings.finetune
        with gr.Tab("Fine-tune"):
            password = gr.Textbox(
                label="Admin password", type="password", visible=self.admin_password is not None
            )
            gr.Markdown("### 1. Build a dataset from the chat log")
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="default: a time stamp")
                mode = gr.Radio(
                    ["grade", "distill", "relabel", "none"], value="grade", label="Teacher mode"
                )
                feedback = gr.Radio(
                    ["all", "any", "up", "down", "none"], value="all", label="Feedback"
                )
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
            gr.Markdown("### 2. Validate and launch")
            with gr.Row():
                dataset = gr.Number(label="Dataset id", precision=0, elem_id="ft-dataset")
                backend = gr.Radio(["local", "openai"], value=ft.backend, label="Backend")
                method = gr.Radio(["supervised", "dpo"], value=ft.method, label="Method")
                base = gr.Textbox(
                    label="Base model",
                    value=ft.base_model or "",
                    placeholder="HF model directory (local) or OpenAI model name",
                )
            with gr.Row():
                validate_btn = gr.Button("Validate and estimate cost", elem_id="ft-validate")
                launch_btn = gr.Button("Launch", variant="primary", elem_id="ft-launch")
            checked = gr.Markdown(elem_id="ft-checked")
            gr.Markdown("### 3. Jobs")
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

            def on_build(n, m, f, s, u, v, c, t, nd, pw, progress=gr.Progress()):  # noqa: B008
                return self.build_dataset(n, m, f, s, u, v, c, t, nd, pw, progress)

            build_btn.click(
                on_build,
                [name, mode, feedback, since, until, version, min_chars, threshold, near, password],
                [built, preview, dataset],
            )
            validate_btn.click(self.validate, [dataset, backend, method, base, password], checked)
            launch_btn.click(
                self.launch, [dataset, backend, method, base, password], [checked, jobs]
            )
            refresh.click(self.jobs, [password], jobs)
            show_btn.click(self.show, [job_id, password], [events, loss, jobs])
            cancel_btn.click(self.cancel, [job_id, password], [note, jobs])


def build_finetune_tab(
    settings: Settings, store: JobStore, registry: Registry, admin_password: str | None
) -> Callable[[], None]:
    """A builder for the tab, called inside the app's Blocks (see app.ui.build_ui)."""
    return FineTuneTab(settings, store, registry, admin_password).build
