"""The fine-tuning store (same database as the chat log, schema migration 5): datasets with their
card, jobs with their status, settings and outcome, and each job's events and per-step metrics.
Written by finetune; read by the admin UI. A job's row is the truth a restarted monitor resumes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.base import aware
from core.db.base import now as utc_now
from core.db.tables import DatasetRow, JobEventRow, JobRow
from core.errors import RagError
from core.records import DatasetCard

if TYPE_CHECKING:
    from core.db.database import Database

JobStatus = Literal[
    "created", "validating_files", "queued", "running", "succeeded", "failed", "cancelled"
]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobError(RagError):
    """A fine-tuning job or dataset cannot be used as asked (unknown id, wrong state)."""


# -- records ---------------------------------------------------------------------------------------


class TeacherGrade(BaseModel):
    """The teacher's rubric scores (1-5) of one answer, with its reasons."""

    faithfulness: int = Field(ge=1, le=5, description="Supported by the retrieved contexts.")
    correctness: int = Field(ge=1, le=5, description="Answers the question correctly.")
    helpfulness: int = Field(ge=1, le=5, description="Direct, complete and clear.")
    rationale: str

    @property
    def lowest(self) -> int:
        return min(self.faithfulness, self.correctness, self.helpfulness)


class DatasetRecord(BaseModel):
    id: int
    name: str
    content_hash: str
    path: str = Field(description="Folder holding the dataset's files and card.json.")
    card: DatasetCard
    created_at: datetime


class FineTuneJob(BaseModel):
    """One training job, on either backend, as the database holds it."""

    id: int
    backend: Literal["local", "openai"]
    method: Literal["supervised", "dpo", "embedding", "reranker"] = Field(
        description="What it trains: the chat model (`supervised`, `dpo`), the embedding model "
        "or the reranker."
    )
    status: JobStatus
    base_model: str
    dataset_id: int
    external_id: str | None = Field(default=None, description="The provider's job id.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    fine_tuned_model: str | None = None
    adapter_path: str | None = None
    trained_tokens: int | None = None
    error: str | None = None
    candidate_version_id: int | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class JobEvent(BaseModel):
    id: int
    job_id: int
    created_at: datetime
    level: str = "info"
    message: str
    step: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


def _dataset(row: DatasetRow) -> DatasetRecord:
    return DatasetRecord(
        id=row.id,
        name=row.name,
        content_hash=row.content_hash,
        path=row.path,
        card=DatasetCard.model_validate(row.card),
        created_at=aware(row.created_at),
    )


def _job(row: JobRow) -> FineTuneJob:
    return FineTuneJob(
        id=row.id,
        backend=row.backend,
        method=row.method,
        status=row.status,
        base_model=row.base_model,
        dataset_id=row.dataset_id,
        external_id=row.external_id,
        hyperparameters=row.hyperparameters or {},
        settings=row.settings or {},
        fine_tuned_model=row.fine_tuned_model,
        adapter_path=row.adapter_path,
        trained_tokens=row.trained_tokens,
        error=row.error,
        candidate_version_id=row.candidate_version_id,
        cancel_requested=bool(row.cancel_requested),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        finished_at=aware(row.finished_at),
    )


def _event(row: JobEventRow) -> JobEvent:
    return JobEvent(
        id=row.id,
        job_id=row.job_id,
        created_at=aware(row.created_at),
        level=row.level,
        message=row.message,
        step=row.step,
        metrics=row.metrics or {},
    )


_JOB_FIELDS = {
    "status",
    "external_id",
    "hyperparameters",
    "fine_tuned_model",
    "adapter_path",
    "trained_tokens",
    "error",
    "candidate_version_id",
}


class JobStore:
    """Datasets, jobs and job events. Written by finetune, read by the admin UI."""

    def __init__(self, db: Database):
        self.db = db
        self.engine = db.engine

    # -- datasets ------------------------------------------------------------------------------

    def save_dataset(self, card: DatasetCard, path: str) -> DatasetRecord:
        """Record a built dataset (its files are already in `path`)."""
        with Session(self.engine) as s, s.begin():
            row = DatasetRow(
                name=card.name,
                content_hash=card.content_hash,
                path=path,
                card=card.model_dump(mode="json"),
            )
            s.add(row)
            s.flush()
            return _dataset(row)

    def dataset(self, dataset_id: int) -> DatasetRecord:
        with Session(self.engine) as s:
            row = s.get(DatasetRow, dataset_id)
            if row is None:
                raise JobError(
                    f"no dataset {dataset_id} (its id is shown when it is built, and by "
                    "`python -m finetune list`)"
                )
            return _dataset(row)

    def datasets(self, limit: int = 100) -> list[DatasetRecord]:
        with Session(self.engine) as s:
            rows = s.scalars(select(DatasetRow).order_by(DatasetRow.id.desc()).limit(limit))
            return [_dataset(r) for r in rows]

    def newest_dataset(self, kind: str) -> DatasetRecord | None:
        """The newest dataset of `kind` ("chat" or "embedding"), or None: rows are read newest
        first, a few at a time, until one is of that kind (the kind is in the card, where cards
        written before it was recorded imply it)."""
        query = select(DatasetRow).order_by(DatasetRow.id.desc()).execution_options(yield_per=20)
        with Session(self.engine) as s:
            for row in s.scalars(query):
                if (record := _dataset(row)).card.kind == kind:
                    return record
        return None

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self,
        backend: str,
        method: str,
        base_model: str,
        dataset_id: int,
        hyperparameters: dict[str, Any],
        settings: dict[str, Any],
    ) -> FineTuneJob:
        """A new job in status `created` (nothing uploaded or trained yet)."""
        with Session(self.engine) as s, s.begin():
            if s.get(DatasetRow, dataset_id) is None:
                raise JobError(
                    f"no dataset {dataset_id}; build one with `python -m finetune build`"
                )
            row = JobRow(
                backend=backend,
                method=method,
                status="created",
                base_model=base_model,
                dataset_id=dataset_id,
                hyperparameters=hyperparameters,
                settings=settings,
            )
            s.add(row)
            s.flush()
            return _job(row)

    def job(self, job_id: int) -> FineTuneJob:
        with Session(self.engine) as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobError(f"no fine-tuning job {job_id} (the job list shows each one's id)")
            return _job(row)

    def jobs(self, limit: int = 100) -> list[FineTuneJob]:
        with Session(self.engine) as s:
            rows = s.scalars(select(JobRow).order_by(JobRow.id.desc()).limit(limit))
            return [_job(r) for r in rows]

    def unfinished(self) -> list[FineTuneJob]:
        """Jobs not yet succeeded, failed or cancelled: what a restarted monitor picks up."""
        with Session(self.engine) as s:
            rows = s.scalars(
                select(JobRow).where(JobRow.status.not_in(TERMINAL)).order_by(JobRow.id)
            )
            return [_job(r) for r in rows]

    def update(self, job_id: int, **fields: Any) -> FineTuneJob:
        """Change a job's fields. A finished job keeps its final status (a late poll of an old
        status never revives it); reaching a final status stamps `finished_at`."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {', '.join(sorted(unknown))}")
        with Session(self.engine) as s, s.begin():
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobError(f"no fine-tuning job {job_id}")
            status = fields.get("status")
            if status is not None and row.status in TERMINAL and status != row.status:
                fields.pop("status")
            for key, value in fields.items():
                setattr(row, key, value)
            if fields.get("status") in TERMINAL:
                row.finished_at = utc_now()
                row.monitor, row.monitor_until = None, None
            row.updated_at = utc_now()
            s.flush()
            return _job(row)

    def request_cancel(self, job_id: int) -> FineTuneJob:
        """Ask for a job to stop; its monitor (local trainer or OpenAI poller) acts on it."""
        with Session(self.engine) as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobError(f"no fine-tuning job {job_id}")
            if row.status in TERMINAL:
                raise JobError(f"job {job_id} has already ended ({row.status})")
            row.cancel_requested = True
            row.updated_at = utc_now()
            s.flush()
            return _job(row)

    def claim(self, job_id: int, holder: str, lease_s: float) -> bool:
        """Take (or renew) the right to watch an unfinished job for `lease_s` seconds; False when
        another live process holds it. A crashed monitor's lease runs out, so a restart resumes."""
        now = utc_now()
        with Session(self.engine) as s, s.begin():
            result = s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status.not_in(TERMINAL),
                    or_(
                        JobRow.monitor.is_(None),
                        JobRow.monitor == holder,
                        JobRow.monitor_until < now,
                    ),
                )
                .values(monitor=holder, monitor_until=now + timedelta(seconds=lease_s))
            )
            return result.rowcount == 1

    def release(self, job_id: int, holder: str) -> None:
        """Give up watching a job (the next monitor may take it at once)."""
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.monitor == holder)
                .values(monitor=None, monitor_until=None)
            )

    # -- events --------------------------------------------------------------------------------

    def add_event(
        self,
        job_id: int,
        message: str,
        level: str = "info",
        step: int | None = None,
        metrics: dict[str, float] | None = None,
        external_id: str | None = None,
        created_at: datetime | None = None,
    ) -> bool:
        """Append an event; one with a provider id already stored is skipped (returns False),
        so re-reading a provider's event list after a restart adds nothing twice."""
        try:
            with Session(self.engine) as s, s.begin():
                s.add(
                    JobEventRow(
                        job_id=job_id,
                        external_id=external_id,
                        level=level,
                        message=message,
                        step=step,
                        metrics=metrics or {},
                        created_at=created_at or utc_now(),
                    )
                )
        except IntegrityError:
            return False
        return True

    def events(self, job_id: int) -> list[JobEvent]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
            )
            return [_event(r) for r in rows]

    def metrics(self, job_id: int) -> list[JobEvent]:
        """The events that carry per-step metrics (train/validation loss), by step."""
        events = [e for e in self.events(job_id) if e.step is not None and e.metrics]
        return sorted(events, key=lambda e: (e.step or 0, e.id))
