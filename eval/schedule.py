"""Scheduled evaluations (APScheduler, a cron expression): at each fire time the active versions
and every candidate not yet judged on the set are evaluated; with auto-promote winners are
promoted. A run still going when the next fire comes is skipped, and a database lock per fire
time keeps two scheduler processes from running the same evaluation twice."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from core.errors import ConfigError, RagError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

    from core.evalstore import GateDecision
    from eval.runner import EvalContext

log = logging.getLogger(__name__)
LOCK_TTL = timedelta(hours=24)  # a fire time's lock outlives any sane run, then frees itself


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """An APScheduler trigger for a crontab line (5 fields, or 6 with seconds first)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    try:
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=timezone,
            )
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(
            f"{expression!r} is not a cron expression like '0 3 * * *' (minute hour day month "
            f"weekday): {exc}"
        ) from exc


@dataclass
class ScheduleOutcome:
    fired_at: datetime
    ran: bool
    why: str = ""
    runs: list[int] = field(default_factory=list)
    decisions: list[GateDecision] = field(default_factory=list)

    def summary(self) -> str:
        if not self.ran:
            return f"{self.fired_at:%Y-%m-%d %H:%M:%S} skipped: {self.why}"
        verdicts = ", ".join(f"v{d.candidate_version_id} {_verdict(d)}" for d in self.decisions)
        return f"{self.fired_at:%Y-%m-%d %H:%M:%S} evaluated: runs {self.runs}" + (
            f"; candidates: {verdicts}" if verdicts else "; no new candidates"
        )


def _verdict(d: GateDecision) -> str:
    if d.promote:
        return "promoted" if d.applied else "wins (not applied)"
    return "rejected"


def evaluate_all(ctx: EvalContext, set_id: int, auto_promote: bool) -> ScheduleOutcome:
    """Evaluate the active versions on the set, then every candidate not yet judged on it."""
    from eval.evidence import evidence_refusal
    from eval.runner import apply_decision, decide, policy_from, run_eval

    outcome = ScheduleOutcome(fired_at=datetime.now(UTC), ran=True)
    champion = run_eval(ctx, set_id, progress=False)
    outcome.runs.append(champion.id)
    _, digest, samples = ctx.store.load_set(set_id)
    origin = ctx.store.set_info(set_id).origin
    for candidate in ctx.registry.versions(status="candidate"):
        if ctx.store.decided(candidate.id, digest):
            continue
        why = evidence_refusal(candidate, samples, origin)
        if why:
            log.warning("candidate %s not evaluated: %s", candidate.label, why)
            continue
        policy = policy_from(ctx.settings.eval, candidate.kind)
        try:
            if candidate.kind == "chat":
                run = run_eval(ctx, set_id, chat_id=candidate.id, progress=False)
            elif candidate.kind == "reranker":
                run = run_eval(ctx, set_id, reranker_id=candidate.id, progress=False)
            else:
                run = run_eval(ctx, set_id, embedding_id=candidate.id, progress=False)
        except RagError as exc:  # e.g. it trained on this set's questions: refused, go on
            log.warning("candidate %s not evaluated: %s", candidate.label, exc)
            continue
        outcome.runs.append(run.id)
        decision = decide(ctx, champion, run, candidate.id, policy)
        if auto_promote:
            apply_decision(ctx, decision)
            decision = ctx.store.decision(decision.id)
            if decision.promote:  # the next candidate meets the new champion
                champion = run_eval(ctx, set_id, progress=False)
                outcome.runs.append(champion.id)
        outcome.decisions.append(decision)
    return outcome


class ScheduledEvaluation:
    """What fires at each cron time. `fire(slot)` skips when a run of this process is still
    going (overlap) or when another scheduler holds this slot's lock in the database."""

    def __init__(
        self,
        ctx: EvalContext,
        work: Callable[[], ScheduleOutcome],
        holder: str | None = None,
    ):
        self.ctx = ctx
        self.work = work
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._running = threading.Lock()
        self.outcomes: list[ScheduleOutcome] = []

    def fire(self, slot: datetime, key: str | None = None) -> ScheduleOutcome:
        """Run the evaluation of cron time `slot` unless it runs or ran elsewhere; `key` names
        the lock instead of the slot (a run asked for by hand has one of its own)."""
        if not self._running.acquire(blocking=False):
            outcome = ScheduleOutcome(slot, False, "the previous evaluation is still running")
        else:
            try:
                key = key or f"scheduled-eval:{slot.astimezone(UTC):%Y-%m-%dT%H:%M:%S}"
                if not self.ctx.store.try_lock(key, self.holder, LOCK_TTL):
                    outcome = ScheduleOutcome(slot, False, "another scheduler runs this one")
                else:
                    # The lock stays after the run: the slot is done, not to be run again.
                    outcome = self.work()
                    outcome.fired_at = slot
            except Exception as exc:  # a failed evaluation must not stop the schedule
                log.exception("scheduled evaluation failed")
                outcome = ScheduleOutcome(slot, False, f"failed: {type(exc).__name__}: {exc}")
            finally:
                self._running.release()
        self.outcomes.append(outcome)
        print(outcome.summary(), flush=True)
        return outcome

    def tick(self, trigger: CronTrigger, previous: datetime | None, now: datetime) -> datetime:
        """Fire every cron time in (previous, now]; returns the new `previous`. The controllable
        clock for tests, and the same rule APScheduler applies (coalesced: one fire)."""
        after = previous or now
        due = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
        last = None
        while due is not None and due <= now:
            last = due
            due = trigger.get_next_fire_time(due, due + timedelta(microseconds=1))
        if last is not None:
            self.fire(last)
            return last
        return after


def run_scheduled(
    ctx: EvalContext, load_set: Callable[[], int], auto_promote: bool
) -> ScheduleOutcome:
    """One scheduled evaluation now (`schedule --once`). Asked for by hand, it is no cron slot:
    two such runs in the same second both run."""
    job = ScheduledEvaluation(ctx, lambda: evaluate_all(ctx, load_set(), auto_promote))
    now = datetime.now(UTC).replace(microsecond=0)
    return job.fire(now, key=f"manual-eval:{now:%Y-%m-%dT%H:%M:%S}:{uuid.uuid4().hex[:8]}")


def start_scheduler(
    ctx: EvalContext,
    load_set: Callable[[], int],
    cron: str,
    auto_promote: bool,
    blocking: bool = True,
):
    """Run `evaluate_all` at every cron time with APScheduler; returns the (started) scheduler
    when not blocking."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    trigger = cron_trigger(cron)
    job = ScheduledEvaluation(ctx, lambda: evaluate_all(ctx, load_set(), auto_promote))
    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone="UTC")

    seconds = len(cron.split()) == 6

    def fire() -> None:
        # The slot names the fire time, the same in every scheduler process (cron granularity).
        now = datetime.now(UTC).replace(microsecond=0)
        job.fire(now if seconds else now.replace(second=0))

    # max_instances 1: APScheduler itself drops a fire while one still runs (overlap skipped);
    # coalesce: after downtime, missed fires run once, not once each.
    scheduler.add_job(fire, trigger, id="evaluate", max_instances=1, coalesce=True)
    scheduler.add_listener(
        lambda event: log.warning("skipped an evaluation: the previous one is still running"),
        EVENT_JOB_MAX_INSTANCES,
    )
    scheduler.evaluation = job  # type: ignore[attr-defined]
    with contextlib.suppress(KeyboardInterrupt, SystemExit):  # Ctrl-C ends a blocking schedule
        scheduler.start()
    return scheduler
