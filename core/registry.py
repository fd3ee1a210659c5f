"""The model registry: versions of the chat, embedding and reranker models, which one of each kind
is active, and the history of promotions and rollbacks. Lives in the chat log's database (schema
migration 2); a revision number, bumped on every change, lets each app process notice cheaply."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.tables import ModelVersionRow, RegistryEventRow, RegistryRevisionRow
from core.errors import RagError

if TYPE_CHECKING:
    from core.db.database import Database
    from core.settings import Settings

Kind = Literal["chat", "embedding", "reranker"]
Status = Literal["candidate", "active", "retired", "rejected"]
KINDS: tuple[Kind, ...] = ("chat", "embedding", "reranker")
# Which settings sections a version of each kind may override (its "how to build it").
SPEC_SECTIONS: dict[str, tuple[str, ...]] = {
    "chat": ("llm", "retrieval"),
    "embedding": ("embedding", "chroma"),
    "reranker": ("reranker",),
}
SECRET_FIELDS = {"api_key", "admin_password"}


class RegistryError(RagError):
    """A registry operation that cannot be done as asked (unknown version, nothing to roll back)."""


class ModelVersion(BaseModel):
    """A registered model: what it is, how to build it (settings overrides), where it came from."""

    id: int
    kind: Kind
    name: str
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings overrides by section (chat: llm, retrieval; embedding: embedding, "
        "chroma). Empty: the configuration in settings as it is.",
    )
    parent_id: int | None = None
    status: Status
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="dataset card hash, source turn-id range, job id, base model, training "
        "metrics, train_question_keys (normalised question hashes, kept out of its eval sets)",
    )
    created_at: datetime

    @property
    def label(self) -> str:
        return f"{self.kind} v{self.id}"


class RegistryEvent(BaseModel):
    id: int
    kind: Kind
    action: Literal["seed", "promote", "rollback"]
    version_id: int
    previous_id: int | None
    reason: str
    created_at: datetime


def _version(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        kind=row.kind,
        name=row.name,
        spec=row.spec or {},
        parent_id=row.parent_id,
        status=row.status,
        provenance=row.provenance or {},
        created_at=row.created_at,
    )


def _event(row: RegistryEventRow) -> RegistryEvent:
    return RegistryEvent(
        id=row.id,
        kind=row.kind,
        action=row.action,
        version_id=row.version_id,
        previous_id=row.previous_id,
        reason=row.reason,
        created_at=row.created_at,
    )


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def strip_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if k not in SECRET_FIELDS}
    return value


def check_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Validate a version's spec: only its kind's sections, no secrets (keys stay in settings)."""
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    allowed = SPEC_SECTIONS[kind]
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise RegistryError(
            f"a {kind} version may only set {', '.join(allowed)}; not {', '.join(extra)}"
        )
    if strip_secrets(spec) != spec:
        raise RegistryError("API keys are never stored in the registry; keep them in settings")
    for section, overrides in spec.items():
        _check_section(section, overrides)
    return spec


def _check_section(section: str, overrides: Any) -> None:
    """Every key of a spec section must be a setting of that section, with a value it accepts: a
    typo ("top_kk") would otherwise change nothing, or something else, without a word."""
    from pydantic import BaseModel, ValidationError

    from core.settings import Settings

    field = Settings.model_fields.get(section)
    model = field.annotation if field is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistryError(f"there is no settings section {section!r} to override")
    if not isinstance(overrides, dict):
        raise RegistryError(f"the spec's {section!r} must be an object of settings")
    unknown = sorted(set(overrides) - set(model.model_fields))
    if unknown:
        known = ", ".join(sorted(model.model_fields))
        raise RegistryError(
            f"unknown setting {', '.join(f'{section}.{k}' for k in unknown)} in the spec; "
            f"{section} has: {known}"
        )
    try:
        model.model_validate(overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (section, *first["loc"]))
        raise RegistryError(f"{where} in the spec: {first['msg']}") from exc


def apply_spec(settings: Settings, *versions: ModelVersion | None) -> Settings:
    """A copy of `settings` with each version's overrides applied (validated by pydantic)."""
    data = settings.model_dump()
    for version in versions:
        if version is None:
            continue
        for section, overrides in version.spec.items():
            merged = dict(data.get(section) or {})
            merged.update(overrides)
            data[section] = merged
    return type(settings).model_validate(data)


class Registry:
    """Reads and changes the registry. Candidates are written by finetune, promotion and rollback
    by eval or an admin; the app only reads (`revision()` per question, `active()` on change)."""

    def __init__(self, db: Database):
        self.db = db
        self.engine = db.engine

    # -- reading -------------------------------------------------------------------------------

    def revision(self) -> int:
        """A number that changes whenever a version is registered, promoted or rolled back."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(RegistryRevisionRow.revision).where(RegistryRevisionRow.id == 1)
            ).scalar()
        return int(value or 0)

    def get(self, version_id: int) -> ModelVersion:
        with Session(self.engine) as s:
            row = s.get(ModelVersionRow, version_id)
            if row is None:
                raise RegistryError(f"no model version {version_id}; see `python -m eval history`")
            return _version(row)

    def active(self, kind: Kind) -> ModelVersion | None:
        with Session(self.engine) as s:
            row = s.scalar(
                select(ModelVersionRow).where(
                    ModelVersionRow.kind == kind, ModelVersionRow.status == "active"
                )
            )
            return _version(row) if row else None

    def active_all(self) -> dict[str, ModelVersion | None]:
        with Session(self.engine) as s:
            rows = s.scalars(select(ModelVersionRow).where(ModelVersionRow.status == "active"))
            found = {row.kind: _version(row) for row in rows}
        return {kind: found.get(kind) for kind in KINDS}

    def versions(
        self, kind: Kind | None = None, status: Status | None = None
    ) -> list[ModelVersion]:
        q = select(ModelVersionRow).order_by(ModelVersionRow.id)
        if kind:
            q = q.where(ModelVersionRow.kind == kind)
        if status:
            q = q.where(ModelVersionRow.status == status)
        with Session(self.engine) as s:
            return [_version(r) for r in s.scalars(q)]

    def history(self, kind: Kind | None = None) -> list[RegistryEvent]:
        q = select(RegistryEventRow).order_by(RegistryEventRow.id)
        if kind:
            q = q.where(RegistryEventRow.kind == kind)
        with Session(self.engine) as s:
            return [_event(r) for r in s.scalars(q)]

    # -- writing -------------------------------------------------------------------------------

    def _bump(self, s: Session) -> None:
        # Also the write lock: on PostgreSQL the row lock serialises concurrent registry changes.
        s.execute(
            update(RegistryRevisionRow)
            .where(RegistryRevisionRow.id == 1)
            .values(revision=RegistryRevisionRow.revision + 1)
        )

    def register(
        self,
        kind: Kind,
        name: str,
        spec: dict[str, Any] | None = None,
        parent_id: int | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Add a candidate version (it answers nothing until promoted)."""
        spec = check_spec(kind, spec or {})
        with Session(self.engine) as s, s.begin():
            self._bump(s)
            if parent_id is not None and s.get(ModelVersionRow, parent_id) is None:
                raise RegistryError(f"parent version {parent_id} does not exist")
            row = ModelVersionRow(
                kind=kind,
                name=name,
                spec=spec,
                parent_id=parent_id,
                status="candidate",
                provenance=provenance or {},
            )
            s.add(row)
            s.flush()
            return _version(row)

    def seed(self, settings: Settings) -> dict[str, ModelVersion]:
        """On first start: register the configuration in settings as the active version of every
        kind that has none, so there is always a champion. Safe when processes race."""
        out: dict[str, ModelVersion] = {}
        for kind in KINDS:
            current = self.active(kind)
            if current is not None:
                out[kind] = current
                continue
            snapshot = {
                section: strip_secrets(getattr(settings, section).model_dump(mode="json"))
                for section in SPEC_SECTIONS[kind]
                if hasattr(settings, section)
            }
            try:
                with Session(self.engine) as s, s.begin():
                    self._bump(s)
                    row = ModelVersionRow(
                        kind=kind,
                        name=f"{kind} from settings",
                        spec={},
                        status="active",
                        provenance={"seeded_from_settings": snapshot},
                    )
                    s.add(row)
                    s.flush()
                    s.add(
                        RegistryEventRow(
                            kind=kind,
                            action="seed",
                            version_id=row.id,
                            previous_id=None,
                            reason="first start: the configuration in settings",
                        )
                    )
            except IntegrityError:
                pass  # another process seeded this kind first; theirs is the champion
            out[kind] = self.active(kind)  # type: ignore[assignment]
        return out

    def _activate(self, s: Session, row: ModelVersionRow, action: str, reason: str) -> int | None:
        current = s.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.kind == row.kind, ModelVersionRow.status == "active"
            )
        )
        previous = current.id if current else None
        if current is not None:
            current.status = "retired"
            s.flush()  # the unique index sees the old champion retired before the new one rises
        row.status = "active"
        s.add(
            RegistryEventRow(
                kind=row.kind, action=action, version_id=row.id, previous_id=previous, reason=reason
            )
        )
        return previous

    def promote(self, version_id: int, reason: str = "admin") -> RegistryEvent:
        """Make `version_id` the active version of its kind; `reason` is a gate decision id
        (``decision:<id>``) or "admin". The previous champion is retired."""
        with Session(self.engine) as s, s.begin():
            self._bump(s)
            row = s.get(ModelVersionRow, version_id)
            if row is None:
                raise RegistryError(f"no model version {version_id}")
            if row.status == "active":
                raise RegistryError(f"{row.kind} v{row.id} is already active")
            self._activate(s, row, "promote", reason)
            kind = row.kind
        return self.history(kind)[-1]

    def reject(self, version_id: int) -> None:
        """Mark a candidate rejected (the gate said no); it stays for the record."""
        with Session(self.engine) as s, s.begin():
            self._bump(s)
            row = s.get(ModelVersionRow, version_id)
            if row is None:
                raise RegistryError(f"no model version {version_id}")
            if row.status == "candidate":
                row.status = "rejected"

    def rollback(self, kind: Kind, reason: str = "admin") -> RegistryEvent:
        """Restore the version that was active before the current one of `kind`."""
        with Session(self.engine) as s, s.begin():
            self._bump(s)
            current = s.scalar(
                select(ModelVersionRow).where(
                    ModelVersionRow.kind == kind, ModelVersionRow.status == "active"
                )
            )
            if current is None:
                raise RegistryError(f"no active {kind} version")
            # The promotion that made the current champion; rollbacks themselves are skipped so
            # that rolling back twice walks further back in time.
            made = s.scalar(
                select(RegistryEventRow)
                .where(
                    RegistryEventRow.kind == kind,
                    RegistryEventRow.version_id == current.id,
                    RegistryEventRow.action.in_(("promote", "seed")),
                )
                .order_by(RegistryEventRow.id.desc())
                .limit(1)
            )
            if made is None or made.previous_id is None:
                raise RegistryError(
                    f"{kind} v{current.id} is the first {kind} version; nothing to roll back to"
                )
            target = s.get(ModelVersionRow, made.previous_id)
            self._activate(s, target, "rollback", reason)
        return self.history(kind)[-1]
