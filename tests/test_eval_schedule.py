"""Scheduled evaluations: fires at the cron time on a controllable clock, skips an overlapping run,
and two schedulers sharing a database never run the same evaluation twice; APScheduler itself
fires the job; `schedule --once` evaluates the active versions and new candidates."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from core.db.database import open_database
from core.errors import ConfigError
from core.evalstore import EvalStore
from eval.schedule import ScheduledEvaluation, ScheduleOutcome, cron_trigger, start_scheduler


class Ctx:
    """Only what the scheduler touches: the eval store (real, on SQLite or PostgreSQL)."""

    def __init__(self, url: str):
        self.store = EvalStore(open_database(url))


def counting_work(log: list, gate: threading.Event | None = None):
    def work() -> ScheduleOutcome:
        log.append(threading.current_thread().name)
        if gate is not None:
            gate.wait(10)
        return ScheduleOutcome(datetime.now(UTC), True)

    return work


def test_fires_at_the_cron_time_on_a_controllable_clock(tmp_path):
    ctx = Ctx(f"sqlite:///{tmp_path / 'rag.db'}")
    ran: list = []
    job = ScheduledEvaluation(ctx, counting_work(ran), holder="a")
    trigger = cron_trigger("30 3 * * *")
    t0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    prev = job.tick(trigger, None, t0)
    prev = job.tick(trigger, prev, t0 + timedelta(minutes=29, seconds=59))
    assert ran == []  # not yet
    prev = job.tick(trigger, prev, t0 + timedelta(minutes=30))
    assert len(ran) == 1 and job.outcomes[-1].fired_at == t0 + timedelta(minutes=30)
    prev = job.tick(trigger, prev, t0 + timedelta(hours=5))
    assert len(ran) == 1  # once a day
    # After two days of downtime the missed fires coalesce into one.
    job.tick(trigger, prev, t0 + timedelta(days=3))
    assert len(ran) == 2 and job.outcomes[-1].fired_at == t0 + timedelta(days=2, minutes=30)


def test_an_overlapping_fire_is_skipped(tmp_path):
    ctx = Ctx(f"sqlite:///{tmp_path / 'rag.db'}")
    ran: list = []
    gate = threading.Event()
    job = ScheduledEvaluation(ctx, counting_work(ran, gate), holder="a")
    slot = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    first = threading.Thread(target=job.fire, args=(slot,))
    first.start()
    while not ran:
        time.sleep(0.01)
    second = job.fire(slot + timedelta(minutes=1))
    gate.set()
    first.join()
    assert not second.ran and "still running" in second.why
    assert len(ran) == 1


def test_two_schedulers_never_run_the_same_evaluation_twice(sql_url):
    a_ran, b_ran = [], []
    a = ScheduledEvaluation(Ctx(sql_url), counting_work(a_ran), holder="host-a")
    b = ScheduledEvaluation(Ctx(sql_url), counting_work(b_ran), holder="host-b")
    slot = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    threads = [threading.Thread(target=j.fire, args=(slot,)) for j in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a_ran) + len(b_ran) == 1
    # A late second scheduler for the same fire time still does not run it again.
    late = b.fire(slot) if a_ran else a.fire(slot)
    assert not late.ran and "another scheduler" in late.why
    # The next fire time is a new evaluation.
    b.fire(slot + timedelta(days=1))
    assert len(a_ran) + len(b_ran) == 2


def test_apscheduler_fires_the_job(tmp_path):
    ctx = Ctx(f"sqlite:///{tmp_path / 'rag.db'}")
    fired = threading.Event()
    scheduler = start_scheduler(ctx, lambda: 0, "* * * * * *", False, blocking=False)
    scheduler.evaluation.work = lambda: (fired.set(), ScheduleOutcome(datetime.now(UTC), True))[1]
    try:
        assert fired.wait(5), "the every-second cron never fired"
    finally:
        scheduler.shutdown(wait=True)
    assert scheduler.evaluation.outcomes[0].ran


def test_bad_cron_is_a_clear_error():
    with pytest.raises(ConfigError, match="not a cron expression"):
        cron_trigger("every night")
