"""`python -m ingest PATH... [options]`: the ingest command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.db.database import open_database
from core.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from core.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Index documents and data sets into the Chroma collection. Re-running on an "
        "unchanged corpus embeds nothing; changed files replace their old chunks.",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or folders (folders recursively)")
    p.add_argument("--glob", action="append", default=[], help="only files matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="skip files matching")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="a Hugging Face datasets source: hub name, or a local "
        ".json/.jsonl/.csv/.parquet file (repeatable)",
    )
    p.add_argument("--split", default=None, help="dataset split (default: train)")
    p.add_argument("--dataset-config", default=None, help="dataset configuration name")
    p.add_argument(
        "--text-field",
        default=None,
        help="record field holding the text (CSV, JSONL, datasets); default: all fields",
    )
    p.add_argument(
        "--metadata-field",
        action="append",
        default=[],
        help="record field kept as chunk metadata (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove chunks of files that no longer exist and rows gone from a dataset",
    )
    p.add_argument("--collection", default=None, help="Chroma collection (overrides settings)")
    p.add_argument("--chunk-size", type=int, default=None, help="chunk size in tokens")
    p.add_argument("--chunk-overlap", type=int, default=None, help="chunk overlap in tokens")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def active_embedding_settings(settings):
    """Settings with the registry's active embedding version applied: after a blue/green swap,
    documents go into the collection the app reads, embedded by the model that reads it."""
    from core.registry import Registry, apply_spec

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.database_url)
    try:
        return apply_spec(settings, Registry(db).active("embedding"))
    finally:
        db.dispose()


def ingest_command(settings: Settings, args: argparse.Namespace) -> int:
    if not args.paths and not args.dataset:
        _parser().error("give at least one PATH or --dataset")
    # A mistyped path fails at once, before the embedding model and Chroma are loaded.
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise SourceError(
            f"no such file or folder: {', '.join(missing)}; nothing was indexed: check the path "
            "and run again"
        )
    from core.index.store import open_index
    from ingest import RecordFields, ingest_paths

    if args.collection:
        settings.chroma.collection = args.collection
    else:
        settings = active_embedding_settings(settings)
    if args.chunk_size is not None or args.chunk_overlap is not None:
        try:
            settings.chunking = settings.chunking.model_validate(
                {
                    "size": args.chunk_size or settings.chunking.size,
                    "overlap": settings.chunking.overlap
                    if args.chunk_overlap is None
                    else args.chunk_overlap,
                }
            )
        except ValueError as exc:
            raise ConfigError(f"--chunk-size / --chunk-overlap: {exc}") from exc
    metadata_fields = [f for item in args.metadata_field for f in item.split(",") if f]
    collection, embed_model = open_index(settings)
    report = ingest_paths(
        settings,
        collection,
        embed_model,
        paths=args.paths,
        include=args.glob,
        exclude=args.exclude,
        fields=RecordFields(args.text_field, metadata_fields),
        datasets=args.dataset,
        split=args.split,
        dataset_config=args.dataset_config,
        prune=args.prune,
        progress=not args.no_progress,
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for name, reason in report.failed:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    from core.cli import run_command

    return run_command(_parser(), {"ingest": ingest_command}, argv, "ingest")


if __name__ == "__main__":
    sys.exit(main())
