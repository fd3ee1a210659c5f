"""The eval store (same database as the chat log, schema migration 4): evaluation sets with their
content hash, runs with their settings, versions and per-sample scores, gate decisions, and the
locks that keep two schedulers from running the same evaluation twice. Written by eval."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.base import aware
from core.db.base import now as utc_now
from core.db.tables import EvalLockRow, EvalRunRow, EvalSampleRow, EvalSetRow, GateDecisionRow
from core.errors import RagError

if TYPE_CHECKING:
    from core.db.database import Database


# -- records ---------------------------------------------------------------------------------------


class EvalSample(BaseModel):
    """One question of an evaluation set; field names follow Ragas."""

    user_input: str
    reference: str | None = Field(default=None, description="The expected answer.")
    reference_contexts: list[str] = Field(
        default_factory=list, description="Passages that hold the answer."
    )
    reference_sources: list[str] = Field(
        default_factory=list,
        description="File names or paths (relative to the ingest root) that hold the answer.",
    )


class EvalSetInfo(BaseModel):
    """A stored evaluation set: its name, size and where its questions came from."""

    id: int
    name: str
    content_hash: str
    n_samples: int
    origin: dict[str, Any] = Field(
        default_factory=dict,
        description="kind: file | upload | dataset | chatlog | generated, with what made it",
    )
    created_at: datetime | None = None

    @property
    def label(self) -> str:
        kind = self.origin.get("kind", "set")
        questions = "question" if self.n_samples == 1 else "questions"
        return f"set {self.id}: {self.name} ({self.n_samples} {questions}, {kind})"


# Why a metric is NaN on a sample when the set, not the run, lacks what it needs: the sample has
# no reference answer, or no gold passages or sources. Such a sample is outside what the set can
# measure for that metric (the gate neither pairs it nor counts it as a failure to measure).
NO_REFERENCE = "no reference"
NO_REFERENCE_CONTEXTS = "no reference_contexts"
NO_GOLD = "no reference_sources or reference_contexts"
SET_GAPS = frozenset({NO_REFERENCE, NO_REFERENCE_CONTEXTS, NO_GOLD})


class ScoredSample(BaseModel):
    """A sample as one model version answered it, with its scores (None: not measured)."""

    idx: int
    user_input: str
    response: str | None = None
    retrieved_contexts: list[str] = Field(default_factory=list)
    retrieved_sources: list[str] = Field(default_factory=list)
    reference: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    nan_reasons: dict[str, str] = Field(default_factory=dict)


class MetricSummary(BaseModel):
    mean: float | None = Field(description="Mean over measured samples; None if none measured.")
    measured: int
    nan: int = Field(description="Samples where the metric could not be measured.")


class EvalRun(BaseModel):
    id: int
    set_id: int
    set_hash: str
    chat_version_id: int | None
    embedding_version_id: int | None
    status: Literal["running", "done", "failed"]
    reranker_version_id: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, MetricSummary] = Field(default_factory=dict)
    judge_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float | None = None
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None

    @property
    def versions(self) -> str:
        """The registry versions that answered: "chat v1 + embedding v2 (+ reranker v3)"."""
        text = f"chat v{self.chat_version_id} + embedding v{self.embedding_version_id}"
        if self.reranker_version_id:
            text += f" + reranker v{self.reranker_version_id}"
        return text

    @property
    def reranker_cell(self) -> str:
        return f"v{self.reranker_version_id}" if self.reranker_version_id else "none"


class GateDecision(BaseModel):
    id: int | None = None
    champion_run_id: int
    candidate_run_id: int
    candidate_version_id: int | None
    promote: bool
    reasons: list[str]
    comparison: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    applied: bool = False
    created_at: datetime | None = None


def summarise(samples: list[ScoredSample]) -> dict[str, MetricSummary]:
    """Mean per metric over the samples that measured it; NaN counted, never averaged in."""
    names = sorted({name for s in samples for name in s.scores})
    out = {}
    for name in names:
        values = [s.scores.get(name) for s in samples]
        good = [v for v in values if v is not None and not math.isnan(v)]
        out[name] = MetricSummary(
            mean=sum(good) / len(good) if good else None,
            measured=len(good),
            nan=len(values) - len(good),
        )
    return out


def _set_info(row: EvalSetRow) -> EvalSetInfo:
    return EvalSetInfo(
        id=row.id,
        name=row.name,
        content_hash=row.content_hash,
        n_samples=row.n_samples,
        origin=row.origin or {},
        created_at=aware(row.created_at),
    )


def _run(row: EvalRunRow, set_hash: str) -> EvalRun:
    return EvalRun(
        id=row.id,
        set_id=row.set_id,
        set_hash=set_hash,
        chat_version_id=row.chat_version_id,
        embedding_version_id=row.embedding_version_id,
        reranker_version_id=row.reranker_version_id,
        status=row.status,
        settings=row.settings or {},
        summary={k: MetricSummary(**v) for k, v in (row.summary or {}).items()},
        judge_model=row.judge_model,
        prompt_tokens=row.prompt_tokens or 0,
        completion_tokens=row.completion_tokens or 0,
        duration_s=row.duration_s,
        error=row.error,
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
    )


def _decision(row: GateDecisionRow) -> GateDecision:
    return GateDecision(
        id=row.id,
        champion_run_id=row.champion_run_id,
        candidate_run_id=row.candidate_run_id,
        candidate_version_id=row.candidate_version_id,
        promote=row.promote,
        reasons=row.reasons,
        comparison=row.comparison,
        policy=row.policy,
        applied=row.applied,
        created_at=aware(row.created_at),
    )


def _json_safe(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class EvalStore:
    """Evaluation sets, runs, per-sample scores, gate decisions and locks."""

    def __init__(self, db: Database):
        self.db = db
        self.engine = db.engine

    # -- sets ------------------------------------------------------------------------------------

    def save_set(
        self,
        name: str,
        content_hash: str,
        samples: list[EvalSample],
        origin: dict[str, Any] | None = None,
    ) -> int:
        """Store a set once per content hash; returns its id (the existing one if known)."""
        with Session(self.engine) as s:
            found = s.scalar(select(EvalSetRow.id).where(EvalSetRow.content_hash == content_hash))
            if found is not None:
                return found
        try:
            with Session(self.engine) as s, s.begin():
                row = EvalSetRow(
                    content_hash=content_hash,
                    name=name,
                    n_samples=len(samples),
                    samples=[x.model_dump() for x in samples],
                    origin=origin or {},
                )
                s.add(row)
                s.flush()
                return row.id
        except IntegrityError:  # stored by another process meanwhile
            with Session(self.engine) as s:
                return s.scalar(
                    select(EvalSetRow.id).where(EvalSetRow.content_hash == content_hash)
                )

    def load_set(self, set_id: int) -> tuple[str, str, list[EvalSample]]:
        """(name, content hash, samples) of a stored set."""
        with Session(self.engine) as s:
            row = s.get(EvalSetRow, set_id)
            if row is None:
                raise RagError(f"no evaluation set {set_id}")
            return row.name, row.content_hash, [EvalSample(**x) for x in row.samples]

    def set_info(self, set_id: int) -> EvalSetInfo:
        with Session(self.engine) as s:
            row = s.get(EvalSetRow, set_id)
            if row is None:
                raise RagError(f"no evaluation set {set_id}")
            return _set_info(row)

    def sets(self, limit: int = 200) -> list[EvalSetInfo]:
        """Stored sets, newest first."""
        with Session(self.engine) as s:
            rows = s.scalars(select(EvalSetRow).order_by(EvalSetRow.id.desc()).limit(limit))
            return [_set_info(r) for r in rows]

    # -- runs ------------------------------------------------------------------------------------

    def start_run(
        self,
        set_id: int,
        chat_version_id: int | None,
        embedding_version_id: int | None,
        settings: dict[str, Any],
        judge_model: str | None,
        reranker_version_id: int | None = None,
    ) -> int:
        with Session(self.engine) as s, s.begin():
            row = EvalRunRow(
                set_id=set_id,
                chat_version_id=chat_version_id,
                embedding_version_id=embedding_version_id,
                reranker_version_id=reranker_version_id,
                settings=settings,
                judge_model=judge_model,
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_run(
        self,
        run_id: int,
        samples: list[ScoredSample],
        duration_s: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> EvalRun:
        summary = summarise(samples)
        with Session(self.engine) as s, s.begin():
            row = s.get(EvalRunRow, run_id)
            for sample in samples:
                data = sample.model_dump()
                data["scores"] = {k: _json_safe(v) for k, v in sample.scores.items()}
                s.add(EvalSampleRow(run_id=run_id, idx=sample.idx, data=data))
            row.status = "done"
            row.summary = {k: v.model_dump() for k, v in summary.items()}
            row.duration_s = duration_s
            row.prompt_tokens, row.completion_tokens = prompt_tokens, completion_tokens
            row.finished_at = utc_now()
        return self.run(run_id)

    def fail_run(self, run_id: int, error: str, duration_s: float) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(EvalRunRow, run_id)
            row.status, row.error, row.duration_s = "failed", error, duration_s
            row.finished_at = utc_now()

    def run(self, run_id: int) -> EvalRun:
        with Session(self.engine) as s:
            found = s.execute(
                select(EvalRunRow, EvalSetRow.content_hash)
                .join(EvalSetRow, EvalSetRow.id == EvalRunRow.set_id)
                .where(EvalRunRow.id == run_id)
            ).first()
            if found is None:
                raise RagError(f"no eval run {run_id}; see `python -m eval history`")
            return _run(*found)

    def runs(self, limit: int = 200) -> list[EvalRun]:
        """Newest first."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(EvalRunRow, EvalSetRow.content_hash)
                .join(EvalSetRow, EvalSetRow.id == EvalRunRow.set_id)
                .order_by(EvalRunRow.id.desc())
                .limit(limit)
            ).all()
            return [_run(*r) for r in rows]

    def samples(self, run_id: int) -> list[ScoredSample]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(EvalSampleRow)
                .where(EvalSampleRow.run_id == run_id)
                .order_by(EvalSampleRow.idx)
            )
            out = []
            for r in rows:
                data = dict(r.data)
                data["scores"] = {
                    k: (math.nan if v is None else v) for k, v in data["scores"].items()
                }
                out.append(ScoredSample(**data))
            return out

    def latest_run(
        self,
        set_id: int,
        chat_version_id: int | None,
        embedding_version_id: int | None,
        reranker_version_id: int | None = None,
    ) -> EvalRun | None:
        """The newest finished run of these versions on this set, if any."""
        with Session(self.engine) as s:
            found = s.execute(
                select(EvalRunRow, EvalSetRow.content_hash)
                .join(EvalSetRow, EvalSetRow.id == EvalRunRow.set_id)
                .where(
                    EvalRunRow.set_id == set_id,
                    EvalRunRow.chat_version_id == chat_version_id,
                    EvalRunRow.embedding_version_id == embedding_version_id,
                    EvalRunRow.reranker_version_id == reranker_version_id,
                    EvalRunRow.status == "done",
                )
                .order_by(EvalRunRow.id.desc())
                .limit(1)
            ).first()
            return _run(*found) if found else None

    # -- decisions -------------------------------------------------------------------------------

    def save_decision(self, decision: GateDecision) -> GateDecision:
        with Session(self.engine) as s, s.begin():
            row = GateDecisionRow(
                champion_run_id=decision.champion_run_id,
                candidate_run_id=decision.candidate_run_id,
                candidate_version_id=decision.candidate_version_id,
                promote=decision.promote,
                reasons=decision.reasons,
                comparison=decision.comparison,
                policy=decision.policy,
                applied=decision.applied,
            )
            s.add(row)
            s.flush()
            return _decision(row)

    def decided(self, version_id: int, set_hash: str) -> bool:
        """Whether the gate has judged `version_id` on the set with this content hash."""
        with Session(self.engine) as s:
            found = s.scalar(
                select(GateDecisionRow.id)
                .join(EvalRunRow, EvalRunRow.id == GateDecisionRow.candidate_run_id)
                .join(EvalSetRow, EvalSetRow.id == EvalRunRow.set_id)
                .where(
                    GateDecisionRow.candidate_version_id == version_id,
                    EvalSetRow.content_hash == set_hash,
                )
                .limit(1)
            )
            return found is not None

    def mark_applied(self, decision_id: int) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(GateDecisionRow)
                .where(GateDecisionRow.id == decision_id)
                .values(applied=True)
            )

    def decision(self, decision_id: int) -> GateDecision:
        with Session(self.engine) as s:
            row = s.get(GateDecisionRow, decision_id)
            if row is None:
                raise RagError(f"no gate decision {decision_id}")
            return _decision(row)

    def last_decision_for(self, version_id: int) -> GateDecision | None:
        """The gate's latest decision on candidate `version_id`, if it ever judged it."""
        with Session(self.engine) as s:
            row = s.scalar(
                select(GateDecisionRow)
                .where(GateDecisionRow.candidate_version_id == version_id)
                .order_by(GateDecisionRow.id.desc())
                .limit(1)
            )
            return _decision(row) if row is not None else None

    def decisions(self, limit: int = 200) -> list[GateDecision]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(GateDecisionRow).order_by(GateDecisionRow.id.desc()).limit(limit)
            )
            return [_decision(r) for r in rows]

    # -- locks -----------------------------------------------------------------------------------

    def try_lock(self, key: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Take the named lock unless another live holder has it (expired locks are taken over)."""
        now = now or utc_now()
        with Session(self.engine) as s, s.begin():
            taken = s.execute(
                update(EvalLockRow)
                .where(EvalLockRow.key == key, EvalLockRow.expires_at < now)
                .values(holder=holder, expires_at=now + ttl)
            ).rowcount
            if taken:
                return True
        try:
            with Session(self.engine) as s, s.begin():
                s.add(EvalLockRow(key=key, holder=holder, expires_at=now + ttl))
            return True
        except IntegrityError:
            return False

    def unlock(self, key: str, holder: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                delete(EvalLockRow).where(EvalLockRow.key == key, EvalLockRow.holder == holder)
            )
