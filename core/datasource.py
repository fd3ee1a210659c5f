"""Reading a `datasets` source, the one way every package does it (ingest rows, eval sets,
fine-tuning examples and embedding pairs): a local .json/.jsonl/.csv/.parquet file, or a hub name
already in the local cache (the product is offline: nothing is downloaded). A source that cannot
be read, or lacks a column asked for, is a SourceError that names the columns it has."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SourceError
from core.logs import quiet
from core.wording import counted

if TYPE_CHECKING:
    from datasets import Dataset

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def is_local(spec: str) -> bool:
    """Whether `spec` names a local file (by its extension) rather than a hub data set."""
    return Path(spec).suffix.lower() in LOCAL_FORMATS


def dataset_name(spec: str) -> str:
    """The name a source is recorded under: the hub name, or the absolute path of a local file."""
    return str(Path(spec).resolve()) if is_local(spec) else spec


def load_rows(
    spec: str,
    split: str | None = None,
    config: str | None = None,
    columns: tuple[str | None, ...] = (),
) -> Dataset:
    """The rows of `spec` (split `train` by default); each named column must exist."""
    import datasets

    path = Path(spec)
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is not None and split not in (None, "train"):
        raise SourceError(f"{spec} is one file: its only split is 'train', not {split!r}")
    try:
        with quiet("datasets"):  # it logs its own parse error before raising a vaguer one
            if fmt is not None:
                if not path.is_file():
                    raise SourceError(f"no such file: {spec}")
                table = datasets.load_dataset(fmt, data_files=str(path), split=split or "train")
            elif path.exists():
                raise SourceError(f"{spec}: use a .jsonl, .json, .csv or .parquet file")
            else:
                table = datasets.load_dataset(spec, config, split=split or "train")
    except SourceError:
        raise
    except Exception as exc:  # datasets raises many unrelated types for one cause: bad input
        if fmt == "json":
            # Read as JSON here, to say what is wrong by line number (or, where the file reads
            # as JSON after all, to take its rows).
            rows = json_rows(path)
            try:
                table = datasets.Dataset.from_list(rows)
            except Exception as again:  # e.g. a column that is text in one row, a number in another
                raise SourceError(
                    f"cannot read {spec}: {type(again).__name__}: {str(again)[:300]}"
                ) from exc
        elif fmt is not None:
            cause = _root(exc)
            raise SourceError(
                f"cannot read {spec} as {fmt.upper()} ({type(cause).__name__}: {str(cause)[:300]})"
            ) from exc
        else:
            raise SourceError(
                f"cannot load dataset {spec} ({type(exc).__name__}: {str(exc)[:300]}); offline, "
                "a hub name must already be in the local cache, or give a local file"
            ) from exc
    for column in columns:
        if column and column not in table.column_names:
            raise SourceError(
                f"{spec} has no column {column!r}; columns: {', '.join(table.column_names)}"
            )
    return table


def _root(exc: BaseException) -> BaseException:
    """The error at the bottom of a chain (`datasets` wraps the parser's own in a vague one)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def json_lines(text: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(line number from 1, the object, None) for each non-blank line of JSON Lines `text`, or
    (line number, {}, what is wrong with it) for a line that is not a JSON object."""
    # Split on line feeds only: a JSON string may hold U+2028 and its kin, written raw.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, {}, f"not JSON ({exc.msg})"
            continue
        if isinstance(row, dict):
            yield number, row, None
        else:
            yield number, {}, "not a JSON object"


def json_rows(path: Path, shown: int = 5) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, or of a JSON file holding a list of them. Raises
    SourceError naming the bad lines (by number, counted from 1) or where the JSON breaks."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8"
        ) from exc
    if not text.strip():
        raise SourceError(f"{path} is empty")
    if path.suffix.lower() == ".json":
        # One JSON value (a list of rows), or JSON Lines saved as .json ("Extra data" after the
        # first line's value).
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if not exc.msg.startswith("Extra data"):
                raise SourceError(
                    f"{path}: not JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"
                ) from exc
        else:
            if not isinstance(whole, list):
                raise SourceError(
                    f"{path} holds one JSON {type(whole).__name__}, not rows: give a list of "
                    "objects, or one object a line (.jsonl)"
                )
            bad = [f"item {i}" for i, row in enumerate(whole, start=1) if not isinstance(row, dict)]
            if bad:
                raise SourceError(f"{path}: {', '.join(bad[:shown])} not an object")
            return whole
    rows, problems = [], []
    for number, row, problem in json_lines(text):
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            rows.append(row)
    if problems:
        raise SourceError(f"{path}: {bad_lines(problems, shown)} (one JSON object a line)")
    return rows


def bad_lines(problems: list[str], shown: int = 5) -> str:
    """ "3 bad lines: line 2: ...; line 4: ...": the first `shown` of them, and how many more."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{counted(len(problems), 'bad line')}: {'; '.join(problems[:shown])}{more}"
