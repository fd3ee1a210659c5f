"""The chat log store (SQLAlchemy): sessions, turns and feedback, on SQLite by default or any
SQLAlchemy URL. The schema is created and migrated on open; a turn is committed when asked, before
its answer exists, so a crash mid-answer still leaves the question logged."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.records import Feedback, SourceRef, TokenUsage, Turn


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ChatSessionRow(Base):
    __tablename__ = "chat_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class TurnRow(Base):
    __tablename__ = "turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id"), index=True)
    question: Mapped[str] = mapped_column(Text)
    condensed_question: Mapped[str | None] = mapped_column(Text)
    contexts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    answer: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(String(300))
    provider: Mapped[str | None] = mapped_column(String(50))
    prompt_version: Mapped[str | None] = mapped_column(String(100))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    # The registry versions that answered (migration 3).
    chat_version_id: Mapped[int | None] = mapped_column(Integer)
    embedding_version_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FeedbackRow(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("turn_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id"), index=True)
    rating: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


def _create_v1(conn: Connection) -> None:
    for table in (ChatSessionRow, TurnRow, FeedbackRow):
        table.__table__.create(conn, checkfirst=True)


def _create_v2(conn: Connection) -> None:
    from core.registry import create_registry_tables

    create_registry_tables(conn)


def _create_v3(conn: Connection) -> None:
    # Version 1 creates `turns` from the current model, so a fresh database has these already.
    have = {c["name"] for c in inspect(conn).get_columns("turns")}
    for column in ("chat_version_id", "embedding_version_id"):
        if column not in have:
            conn.execute(text(f"ALTER TABLE turns ADD COLUMN {column} INTEGER"))


def _create_v4(conn: Connection) -> None:
    from core.evalstore import create_eval_tables

    create_eval_tables(conn)


def _create_v5(conn: Connection) -> None:
    from core.jobstore import create_finetune_tables

    create_finetune_tables(conn)


# Ordered schema migrations; each runs once, in its own transaction, and is recorded.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _create_v1),
    (2, _create_v2),  # model registry
    (3, _create_v3),  # turns carry the registry versions that answered
    (4, _create_v4),  # eval sets, runs, per-sample scores, gate decisions, eval locks
    (5, _create_v5),  # fine-tuning datasets, jobs and job events
]


# Key of the PostgreSQL advisory lock that lets one process at a time migrate (app processes
# starting together on a fresh database would otherwise both create the tables).
_MIGRATION_LOCK = 7_226_001


def migrate(engine: Engine) -> int:
    """Bring the schema to the newest version; returns that version."""
    with engine.connect() as conn:
        locked = conn.dialect.name == "postgresql"
        if locked:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
        try:
            SchemaVersion.__table__.create(conn, checkfirst=True)
            conn.commit()
            current = conn.execute(select(func.max(SchemaVersion.version))).scalar() or 0
            conn.commit()
            for version, step in MIGRATIONS:
                if version > current:
                    step(conn)
                    conn.execute(SchemaVersion.__table__.insert().values(version=version))
                    conn.commit()
                    current = version
        except Exception:
            conn.rollback()
            raise
        finally:
            if locked:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
    return current


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so concurrent chats can write."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def open_database(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    """An engine on the migrated database (the SQLite file's folder made when missing), and
    whether it was made here (so its owner disposes of it); an engine passed in is shared."""
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        if url_or_engine.startswith("sqlite:///"):
            from pathlib import Path

            Path(url_or_engine.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine, owned = make_engine(url_or_engine), True
    migrate(engine)
    return engine, owned


class ChatLog:
    """Writes and reads the chat log. Owned by the app; read by finetune and eval."""

    def __init__(self, url: str):
        self.engine, _ = open_database(url)

    def start_turn(self, session_id: str, question: str) -> int:
        """Log the question now (status pending); returns the turn id."""
        with Session(self.engine) as s, s.begin():
            if s.get(ChatSessionRow, session_id) is None:
                s.add(ChatSessionRow(id=session_id))
                s.flush()
            row = TurnRow(session_id=session_id, question=question, contexts=[])
            s.add(row)
            s.flush()
            return row.id

    def finish_turn(
        self,
        turn_id: int,
        *,
        answer: str | None,
        condensed_question: str | None,
        contexts: list[SourceRef],
        model_id: str,
        provider: str,
        prompt_version: str,
        latency_ms: float,
        usage: TokenUsage | None = None,
        error: str | None = None,
        chat_version_id: int | None = None,
        embedding_version_id: int | None = None,
    ) -> None:
        usage = usage or TokenUsage()
        with Session(self.engine) as s, s.begin():
            row = s.get(TurnRow, turn_id)
            if row is None:
                raise KeyError(f"no turn {turn_id}")
            row.answer = answer
            row.condensed_question = condensed_question
            row.contexts = [c.model_dump() for c in contexts]
            row.model_id, row.provider, row.prompt_version = model_id, provider, prompt_version
            row.latency_ms = latency_ms
            row.prompt_tokens, row.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            row.status = "failed" if error else "answered"
            row.error = error
            row.chat_version_id, row.embedding_version_id = chat_version_id, embedding_version_id
            row.answered_at = _now()

    def set_feedback(self, turn_id: int, rating: str, comment: str | None = None) -> None:
        """Record (or replace) the rating and comment of a turn."""
        if rating not in ("up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        with Session(self.engine) as s, s.begin():
            if s.get(TurnRow, turn_id) is None:
                raise KeyError(f"no turn {turn_id}")
            row = s.scalar(select(FeedbackRow).where(FeedbackRow.turn_id == turn_id))
            if row is None:
                s.add(FeedbackRow(turn_id=turn_id, rating=rating, comment=comment or None))
            else:
                row.rating, row.created_at = rating, _now()
                if comment is not None:
                    row.comment = comment or None

    def count_turns(self, status: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(func.count(TurnRow.id))
            if status:
                q = q.where(TurnRow.status == status)
            return s.scalar(q) or 0

    def turns(
        self,
        since: datetime | None = None,
        feedback: str = "all",
        session_id: str | None = None,
    ) -> Iterator[Turn]:
        """Turns in time order. feedback: all | any (rated) | up | down | none."""
        q = select(TurnRow, FeedbackRow).outerjoin(FeedbackRow, FeedbackRow.turn_id == TurnRow.id)
        if since is not None:
            q = q.where(TurnRow.created_at >= since)
        if session_id is not None:
            q = q.where(TurnRow.session_id == session_id)
        if feedback == "any":
            q = q.where(FeedbackRow.id.is_not(None))
        elif feedback in ("up", "down"):
            q = q.where(FeedbackRow.rating == feedback)
        elif feedback == "none":
            q = q.where(FeedbackRow.id.is_(None))
        elif feedback != "all":
            raise ValueError("feedback must be one of all, any, up, down, none")
        with Session(self.engine) as s:
            for turn, fb in s.execute(q.order_by(TurnRow.id)).yield_per(500):
                yield _to_record(turn, fb)

    def dispose(self) -> None:
        self.engine.dispose()


def _to_record(row: TurnRow, fb: FeedbackRow | None) -> Turn:
    return Turn(
        id=row.id,
        session_id=row.session_id,
        user_input=row.question,
        condensed_question=row.condensed_question,
        retrieved_contexts=[SourceRef(**c) for c in (row.contexts or [])],
        response=row.answer,
        model_id=row.model_id,
        provider=row.provider,
        prompt_version=row.prompt_version,
        latency_ms=row.latency_ms,
        usage=TokenUsage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens),
        status=row.status,
        error=row.error,
        chat_version_id=row.chat_version_id,
        embedding_version_id=row.embedding_version_id,
        created_at=row.created_at,
        answered_at=row.answered_at,
        feedback=Feedback(rating=fb.rating, comment=fb.comment, created_at=fb.created_at)
        if fb
        else None,
    )


def export_jsonl(log: ChatLog, out, since: datetime | None = None, feedback: str = "all") -> int:
    """Write turns as JSON lines to the text stream `out`; returns how many."""
    n = 0
    for turn in log.turns(since=since, feedback=feedback):
        out.write(json.dumps(turn.model_dump(mode="json"), ensure_ascii=False) + "\n")
        n += 1
    return n
