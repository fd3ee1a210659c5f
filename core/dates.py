"""Reading the `--since` dates the CLIs take to filter logged turns."""

from __future__ import annotations

from datetime import UTC, date, datetime

from core.errors import RagError


def parse_since(text: str | None) -> datetime | None:
    """An ISO date or date-time (UTC when no zone is given); None for an empty value."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RagError(f"{text!r} is not an ISO date like 2026-11-01") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def retirement_warning(retires_on: str | None, today: date, days: int = 60) -> str | None:
    """What to tell users of a model that retires on `retires_on` (ISO date, from a registered
    version's provenance): nothing until `days` before, then how long is left, then that it is
    gone."""
    if not retires_on:
        return None
    end = date.fromisoformat(retires_on)
    left = (end - today).days
    if left > days:
        return None
    if left <= 0:
        return f"⚠️ this model retired on {end.isoformat()}: promote a replacement"
    return (
        f"⚠️ this model retires on {end.isoformat()} (in {left} days): fine-tune a replacement "
        "with the local backend"
    )
