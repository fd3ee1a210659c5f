"""Reading a `datasets` source, the one way every package does it (ingest rows, eval sets,
fine-tuning examples and embedding pairs): a local .json/.jsonl/.csv/.parquet file, or a hub name
already in the local cache (the product is offline: nothing is downloaded). A source that cannot
be read, or lacks a column asked for, is a SourceError that names the columns it has."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import SourceError

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
    try:
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
        raise SourceError(
            f"cannot load dataset {spec} ({type(exc).__name__}: {str(exc)[:300]}); offline, a "
            "hub name must already be in the local cache, or give a local file"
        ) from exc
    for column in columns:
        if column and column not in table.column_names:
            raise SourceError(
                f"{spec} has no column {column!r}; columns: {', '.join(table.column_names)}"
            )
    return table
