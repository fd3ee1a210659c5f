"""Named schema migrations, applied in order by a small runner: each runs once, in its own
transaction, and is recorded in `schema_version`. Tables come from core.db.tables; stores never
create tables themselves."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from core.db import tables as t


def _chat_log(conn: Connection) -> None:
    for table in (t.ChatSessionRow, t.TurnRow, t.FeedbackRow):
        table.__table__.create(conn, checkfirst=True)


def _registry(conn: Connection) -> None:
    for table in (t.ModelVersionRow, t.RegistryEventRow, t.RegistryRevisionRow):
        table.__table__.create(conn, checkfirst=True)
    conn.execute(t.RegistryRevisionRow.__table__.insert().values(id=1, revision=0))


def _turn_versions(conn: Connection) -> None:
    # The chat log's migration creates `turns` from the current model, so a fresh database has
    # these already.
    have = {c["name"] for c in inspect(conn).get_columns("turns")}
    for column in ("chat_version_id", "embedding_version_id"):
        if column not in have:
            conn.execute(text(f"ALTER TABLE turns ADD COLUMN {column} INTEGER"))


def _eval(conn: Connection) -> None:
    for table in (t.EvalSetRow, t.EvalRunRow, t.EvalSampleRow, t.GateDecisionRow, t.EvalLockRow):
        table.__table__.create(conn, checkfirst=True)


def _finetune(conn: Connection) -> None:
    for table in (t.DatasetRow, t.JobRow, t.JobEventRow):
        table.__table__.create(conn, checkfirst=True)


def _set_origins(conn: Connection) -> None:
    # The eval migration creates `eval_sets` from the current model: a fresh database has it.
    if "origin" not in {c["name"] for c in inspect(conn).get_columns("eval_sets")}:
        conn.execute(text("ALTER TABLE eval_sets ADD COLUMN origin JSON"))


def _reranker_versions(conn: Connection) -> None:
    # Fresh databases create both tables from the current model, with the column.
    for table in ("turns", "eval_runs"):
        if "reranker_version_id" not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN reranker_version_id INTEGER"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "chat log: sessions, turns, feedback", _chat_log),
    (2, "model registry", _registry),
    (3, "turns carry the registry versions that answered", _turn_versions),
    (4, "eval sets, runs, per-sample scores, gate decisions, eval locks", _eval),
    (5, "fine-tuning datasets, jobs and job events", _finetune),
    (6, "eval sets record where their questions came from", _set_origins),
    (7, "turns and eval runs carry the reranker version", _reranker_versions),
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
            t.SchemaVersion.__table__.create(conn, checkfirst=True)
            conn.commit()
            current = conn.execute(select(func.max(t.SchemaVersion.version))).scalar() or 0
            conn.commit()
            for version, _name, step in MIGRATIONS:
                if version > current:
                    step(conn)
                    conn.execute(t.SchemaVersion.__table__.insert().values(version=version))
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
