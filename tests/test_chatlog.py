"""The chat log store on SQLite and on the real PostgreSQL at 127.0.0.1:5432 (skipped if absent)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from core.chatlog import ChatLog, export_jsonl
from core.db.database import open_database
from core.db.migrations import MIGRATIONS
from core.records import SourceRef, TokenUsage


@pytest.fixture
def db_url(sql_url):
    """The chat log on a fresh SQLite file and on a fresh PostgreSQL database (conftest)."""
    return sql_url


def source(i: int) -> SourceRef:
    return SourceRef(
        chunk_id=f"c{i}", source="/d/a.pdf", file_name="a.pdf", page=i, score=0.5, text=f"t{i}"
    )


def answer(log: ChatLog, turn_id: int, text_: str = "an answer") -> None:
    log.finish_turn(
        turn_id,
        answer=text_,
        condensed_question="cq",
        contexts=[source(1), source(2)],
        model_id="m",
        provider="extractive",
        prompt_version="1+abc",
        latency_ms=12.5,
        usage=TokenUsage(prompt_tokens=10, completion_tokens=3),
    )


def test_turn_round_trip_with_feedback(db_url):
    log = ChatLog(open_database(db_url))
    tid = log.start_turn("s1", "What is it?")
    assert [t.status for t in log.turns()] == ["pending"]  # logged before any answer exists
    answer(log, tid)
    log.set_feedback(tid, "down", "wrong page")
    [turn] = log.turns()
    assert turn.user_input == "What is it?" and turn.response == "an answer"
    assert turn.condensed_question == "cq" and turn.retrieved_contexts[1].page == 2
    assert turn.usage.prompt_tokens == 10 and turn.latency_ms == 12.5
    assert turn.feedback.rating == "down" and turn.feedback.comment == "wrong page"
    log.set_feedback(tid, "down")  # the same rating again keeps its comment
    assert next(iter(log.turns())).feedback.comment == "wrong page"
    log.set_feedback(tid, "up")  # a changed rating drops the comment written for the other one
    [turn] = log.turns()
    assert (turn.feedback.rating, turn.feedback.comment) == ("up", None)
    log.set_feedback(tid, "down", "still the wrong page")  # a new comment with the change stays
    assert next(iter(log.turns())).feedback.comment == "still the wrong page"
    assert log.clear_feedback(tid) and next(iter(log.turns())).feedback is None  # taken back
    assert not log.clear_feedback(tid)
    log.set_feedback(tid, "up", "wrong page")
    with pytest.raises(ValueError):
        log.set_feedback(tid, "meh")
    with pytest.raises(KeyError):
        log.set_feedback(tid + 100, "up")
    log.db.dispose()


def test_filters_and_export(db_url):
    log = ChatLog(open_database(db_url))
    ids = [log.start_turn("s1" if i < 2 else "s2", f"q{i}") for i in range(4)]
    for i in ids:
        answer(log, i)
    log.set_feedback(ids[0], "up")
    log.set_feedback(ids[2], "down", "bad")
    assert [t.user_input for t in log.turns(feedback="down")] == ["q2"]
    assert [t.user_input for t in log.turns(feedback="any")] == ["q0", "q2"]
    assert [t.user_input for t in log.turns(feedback="none")] == ["q1", "q3"]
    assert [t.user_input for t in log.turns(session_id="s2")] == ["q2", "q3"]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(log.turns(since=future)) == []
    # Counted with the same filters (a progress bar's total is what will be read).
    counts = {f: log.count_turns(feedback=f) for f in ("all", "any", "up", "down", "none")}
    assert counts == {"all": 4, "any": 2, "up": 1, "down": 1, "none": 2}
    assert log.count_turns(since=future) == 0 and log.count_turns("answered", feedback="up") == 1
    assert (
        log.count_turns(until=future) == 4
        and log.count_turns(until=future - timedelta(days=1)) == 0
    )
    assert log.count_turns(chat_version_id=99) == 0
    out = io.StringIO()
    assert export_jsonl(log, out, feedback="down") == 1
    row = json.loads(out.getvalue())
    assert row["user_input"] == "q2" and row["feedback"]["comment"] == "bad"
    assert row["retrieved_contexts"][0]["chunk_id"] == "c1"
    log.db.dispose()


def test_schema_is_migrated_once_and_reopens(db_url):
    log = ChatLog(open_database(db_url))
    tid = log.start_turn("s", "kept")
    log.db.dispose()
    again = ChatLog(open_database(db_url))  # opening again must neither fail nor lose data
    assert [t.id for t in again.turns()] == [tid]
    with again.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == [v for v, _, _ in MIGRATIONS]
    assert {"turns", "feedback", "chat_sessions"} <= set(inspect(again.engine).get_table_names())
    again.db.dispose()


def test_a_database_from_before_the_reranker_gains_its_columns_and_keeps_its_rows(db_url):
    """A database at schema 6 (no reranker columns) is brought to the newest schema on open:
    turns and eval runs gain `reranker_version_id`, and the turns already logged stay."""
    log = ChatLog(open_database(db_url))
    tid = log.start_turn("s", "asked before the upgrade")
    with log.engine.begin() as conn:
        for table in ("turns", "eval_runs"):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN reranker_version_id"))
        conn.execute(text("DELETE FROM schema_version WHERE version = 7"))
    log.db.dispose()
    again = ChatLog(open_database(db_url))
    for table in ("turns", "eval_runs"):
        columns = {c["name"] for c in inspect(again.engine).get_columns(table)}
        assert "reranker_version_id" in columns
    [turn] = again.turns()
    assert turn.id == tid and turn.reranker_version_id is None
    again.db.dispose()


def test_concurrent_writers_lose_nothing(db_url):
    from concurrent.futures import ThreadPoolExecutor

    log = ChatLog(open_database(db_url))

    def chat(n: int) -> None:
        for k in range(10):
            tid = log.start_turn(f"s{n}", f"q{n}-{k}")
            answer(log, tid)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(chat, range(8)))
    assert log.count_turns() == 80 and log.count_turns("answered") == 80
    log.db.dispose()


def test_processes_starting_one_new_session_at_the_same_moment_lose_no_turn(sql_url):
    """Six engines (as six app processes would have) log the first turn of the same new session at
    the same moment, twenty times over: every turn is logged, and the session once."""
    import threading

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from core.db.tables import ChatSessionRow

    dbs = [open_database(sql_url) for _ in range(6)]
    logs = [ChatLog(db) for db in dbs]
    errors: list[BaseException] = []
    for n in range(20):
        start = threading.Barrier(len(logs))

        def first_turn(log: ChatLog, start=start, session: str = f"shared-{n}") -> None:
            start.wait(5)
            try:
                log.start_turn(session, "what changed?")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=first_turn, args=(log,)) for log in logs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []
    assert logs[0].count_turns() == 20 * len(logs)
    with Session(dbs[0].engine) as s:
        assert s.scalar(select(func.count(ChatSessionRow.id))) == 20
    for db in dbs:
        db.dispose()
