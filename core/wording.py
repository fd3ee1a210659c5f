"""How messages count things, for every layer that says a number to a user: `1 file`,
`4 files`."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 file`, `4 files`: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
