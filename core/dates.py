"""Reading the `--since` dates the CLIs take to filter logged turns."""

from __future__ import annotations

from datetime import UTC, datetime

from core.errors import RagError


def parse_since(text: str | None) -> datetime | None:
    """An ISO date or date-time (UTC when no zone is given); None for an empty value."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RagError(f"--since {text!r} is not an ISO date like 2026-11-01") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)
