"""The chat log store (SQLAlchemy): sessions, turns and feedback, on SQLite by default or any
SQLAlchemy URL (the tables are core.db's). A turn is committed when asked, before its answer
exists, so a crash mid-answer still leaves the question logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.base import now
from core.db.tables import ChatSessionRow, FeedbackRow, TurnRow
from core.records import Feedback, SourceRef, TokenUsage, Turn

if TYPE_CHECKING:
    from core.db.database import Database


def _add_session(s: Session, session_id: str) -> None:
    """The session row, unless it exists: in one statement that a concurrent insert of the same id
    (two processes, one session) cannot fail, so no turn is ever lost to that race."""
    dialect = s.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        s.execute(
            insert(ChatSessionRow)
            .values(id=session_id, created_at=now())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return
    if s.get(ChatSessionRow, session_id) is None:  # other databases: a savepoint absorbs the race
        from sqlalchemy.exc import IntegrityError

        try:
            with s.begin_nested():
                s.add(ChatSessionRow(id=session_id))
        except IntegrityError:
            pass


class ChatLog:
    """Writes and reads the chat log. Owned by the app; read by finetune and eval."""

    def __init__(self, db: Database):
        self.db = db
        self.engine = db.engine

    def start_turn(self, session_id: str, question: str) -> int:
        """Log the question now (status pending); returns the turn id."""
        with Session(self.engine) as s, s.begin():
            _add_session(s, session_id)
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
        reranker_version_id: int | None = None,
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
            row.reranker_version_id = reranker_version_id
            row.answered_at = now()

    def set_feedback(self, turn_id: int, rating: str, comment: str | None = None) -> None:
        """Record (or replace) the rating and comment of a turn. A comment was written for its
        rating: a changed rating without a new comment drops the old one ("misses the flags"
        must not stand beside a thumbs-up)."""
        if rating not in ("up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        with Session(self.engine) as s, s.begin():
            if s.get(TurnRow, turn_id) is None:
                raise KeyError(f"no turn {turn_id}")
            row = s.scalar(select(FeedbackRow).where(FeedbackRow.turn_id == turn_id))
            if row is None:
                s.add(FeedbackRow(turn_id=turn_id, rating=rating, comment=comment or None))
            else:
                if comment is not None:
                    row.comment = comment or None
                elif row.rating != rating:
                    row.comment = None
                row.rating, row.created_at = rating, now()

    def clear_feedback(self, turn_id: int) -> bool:
        """Remove the rating (and its comment) of a turn, as when the user takes a rating back;
        whether there was one."""
        with Session(self.engine) as s, s.begin():
            row = s.scalar(select(FeedbackRow).where(FeedbackRow.turn_id == turn_id))
            if row is None:
                return False
            s.delete(row)
            return True

    def count_turns(
        self,
        status: str | None = None,
        since: datetime | None = None,
        feedback: str = "all",
        until: datetime | None = None,
        chat_version_id: int | None = None,
    ) -> int:
        """How many turns `turns(since, feedback)` would read (of that status, before `until`,
        answered by that chat version, where given)."""
        q = _selected(
            select(func.count(TurnRow.id)).outerjoin(
                FeedbackRow, FeedbackRow.turn_id == TurnRow.id
            ),
            since,
            feedback,
        )
        if status:
            q = q.where(TurnRow.status == status)
        if until is not None:
            q = q.where(TurnRow.created_at < until)
        if chat_version_id is not None:
            q = q.where(TurnRow.chat_version_id == chat_version_id)
        with Session(self.engine) as s:
            return s.scalar(q) or 0

    def turns(
        self,
        since: datetime | None = None,
        feedback: str = "all",
        session_id: str | None = None,
    ) -> Iterator[Turn]:
        """Turns in time order. feedback: all | any (rated) | up | down | none."""
        q = select(TurnRow, FeedbackRow).outerjoin(FeedbackRow, FeedbackRow.turn_id == TurnRow.id)
        q = _selected(q, since, feedback)
        if session_id is not None:
            q = q.where(TurnRow.session_id == session_id)
        with Session(self.engine) as s:
            for turn, fb in s.execute(q.order_by(TurnRow.id)).yield_per(500):
                yield _to_record(turn, fb)


def _selected(q, since: datetime | None, feedback: str):
    """`q` (turns joined to their feedback) limited to turns at or after `since` with that
    feedback: all | any (rated) | up | down | none."""
    if since is not None:
        q = q.where(TurnRow.created_at >= since)
    if feedback == "any":
        q = q.where(FeedbackRow.id.is_not(None))
    elif feedback in ("up", "down"):
        q = q.where(FeedbackRow.rating == feedback)
    elif feedback == "none":
        q = q.where(FeedbackRow.id.is_(None))
    elif feedback != "all":
        raise ValueError("feedback must be one of all, any, up, down, none")
    return q


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
        reranker_version_id=row.reranker_version_id,
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
