"""Ingest: documents and data sets into the Chroma collection, idempotently and incrementally."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasource import dataset_name
from ingest.loaders import ALL_FIELDS, RecordFields
from ingest.pipeline import IngestReport, ingest_sources
from ingest.sources import dataset_sources, file_sources

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import Settings

__all__ = ["IngestReport", "RecordFields", "ingest_paths"]


def ingest_paths(
    settings: Settings,
    collection: Collection,
    embed_model: BaseEmbedding,
    paths: Sequence[Path] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    fields: RecordFields = ALL_FIELDS,
    datasets: Sequence[str] = (),
    split: str | None = None,
    dataset_config: str | None = None,
    prune: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest files under `paths` and rows of `datasets` into `collection`; see ingest_sources."""
    from core.errors import SourceError
    from core.index.lexical import lexical_dir
    from ingest.sources import SourceFailure

    def all_sources():
        yield from file_sources(paths, include, exclude, fields)
        for spec in datasets:
            try:
                yield from dataset_sources(spec, split, fields, dataset_config)
            except SourceError as exc:
                yield SourceFailure(spec, str(exc))

    return ingest_sources(
        all_sources(),
        collection,
        embed_model,
        settings.chunking,
        prune=prune,
        pruned_datasets=[dataset_name(d) for d in datasets],
        progress=progress,
        lexical_dir=lexical_dir(settings.data_dir, collection),
    )
