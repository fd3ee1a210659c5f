"""A table row as text that keeps its column headers ("Parameter: work_mem; Default: 4MB"), so a
value is never separated from what it is the value of; the same for every format with tables.
Ingest writes rows so, and the extractive answerer knows them when it reads them back."""

from __future__ import annotations

import re
from collections.abc import Sequence


def labelled_row(headers: Sequence[str] | None, cells: Sequence[str]) -> str:
    """`Header: value; ...` when the row has one cell per header (two columns or more), else
    the cells as they are, `|` between them; empty cells left out."""
    cells = [" ".join(c.split()) for c in cells]
    if headers and len(headers) > 1 and len(cells) == len(headers):
        pairs = zip(headers, cells, strict=True)
        return "; ".join(f"{h}: {c}" if h else c for h, c in pairs if c)
    return " | ".join(c for c in cells if c)


# A row as `labelled_row` writes it with two columns or more: "Header: value; Header: value".
_LABELLED = re.compile(r"^[^:;\n]{1,60}: [^;\n]*(?:; [^:;\n]{1,60}: [^;\n]*)+$")


def is_labelled_row(line: str) -> bool:
    """Whether `line` reads as a row `labelled_row` wrote (each value after its header)."""
    return _LABELLED.match(line.strip()) is not None
