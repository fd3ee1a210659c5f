"""Blue/green re-index after an embedding swap: the chunks of the active collection re-embedded by
an embedding version into that version's own collection (resumable: a killed run leaves the old
collection active and intact, and a re-run embeds only what is missing), its lexical index built
from it, and only then the registry switched, in one transaction. Also dropping a collection once
the admin no longer needs it for a rollback.

    python -m ingest.reembed build VERSION | drop COLLECTION [--yes] | list
    python -m eval promote VERSION   (re-embeds first, then switches)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.db.database import open_database
from core.errors import RagError

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.registry import ModelVersion, Registry, RegistryEvent
    from core.settings import Settings

log = logging.getLogger(__name__)

BATCH = 256
# Passes over the source before giving up when ingest keeps changing it during a re-embed.
MAX_PASSES = 5


class ReembedError(RagError):
    """A re-embed that cannot be done as asked (no source collection, the target is active)."""


@dataclass
class ReembedReport:
    """What one re-embed did; `summary()` is its one-line report."""

    source: str
    target: str
    total: int = 0
    embedded: int = 0
    kept: int = 0
    deleted: int = 0
    lexical_rebuilt: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"re-embedded {self.source!r} -> {self.target!r}: {self.total} chunks, "
            f"{self.embedded} embedded now, {self.kept} already there, {self.deleted} stale "
            f"removed; lexical index {'rebuilt' if self.lexical_rebuilt else 'current'}; "
            f"{self.seconds:.1f}s"
        )


def _open_source(settings: Settings) -> Collection:
    from chromadb.errors import NotFoundError

    from core.index.store import chroma_client

    try:
        return chroma_client(settings).get_collection(
            settings.chroma.collection, embedding_function=None
        )
    except (NotFoundError, ValueError) as exc:
        raise ReembedError(
            f"the active collection {settings.chroma.collection!r} does not exist; ingest "
            "documents first (python -m ingest docs/)"
        ) from exc


def own_collection(settings: Settings, version: ModelVersion) -> str | None:
    """The collection `version` reads when it differs from the one `settings` name; else None
    (a version without its own collection, such as a query adapter, needs no re-embed)."""
    name = (version.spec.get("chroma") or {}).get("collection")
    return name if name and name != settings.chroma.collection else None


def reembed(
    source: Settings,
    target: Settings,
    embed_model: BaseEmbedding | None = None,
    progress: bool = True,
    batch: int = BATCH,
) -> ReembedReport:
    """Bring the collection `target` names in line with the one `source` names, embedding with
    `target`'s model: chunks (ids, texts, metadata) are copied, never re-read from files, and
    each is embedded as ingest embeds it (heading path, then text). Chunks already in the target
    are kept, chunks gone from the source removed; then the target's lexical index is built.

    Safe to kill at any point: the source is only read, and a re-run resumes."""
    from tqdm import tqdm

    from core.embedding.providers import build_embedding, embedding_id, resolve_backend
    from core.index.chunks import Meta, all_ids, embed_text
    from core.index.lexical import ensure_lexical, lexical_dir
    from core.index.store import built_with, chroma_client, open_collection, record_dimension
    from ingest.chunking import plan_chunks

    started = time.perf_counter()
    src = _open_source(source)
    client = chroma_client(target)
    name = target.chroma.collection
    if name == src.name and (target.chroma.url, target.chroma_path) == (
        source.chroma.url,
        source.chroma_path,
    ):
        raise ReembedError(f"{name!r} is the active collection itself; nothing to re-embed")
    cfg = resolve_backend(target.embedding, built_with(client, name))
    if embed_model is None:
        cache = target.embedding.cache_dir or target.data_dir / "models"
        embed_model = build_embedding(cfg, cache_dir=cache)
    dst = open_collection(client, name, embedding_id(cfg), create=True)
    plan = plan_chunks(target.chunking, embed_model)
    report = ReembedReport(src.name, name)
    for attempt in range(MAX_PASSES):
        wanted = all_ids(src)
        have = set(all_ids(dst))
        todo = [cid for cid in wanted if cid not in have]
        stale = sorted(have - set(wanted))
        report.total = len(wanted)
        if attempt == 0:
            report.kept = len(wanted) - len(todo)  # what an earlier, interrupted run left
        if stale:
            for start in range(0, len(stale), batch):
                dst.delete(ids=stale[start : start + batch])
            report.deleted += len(stale)
        if not todo:
            break
        bar = tqdm(
            total=len(wanted), initial=len(wanted) - len(todo), unit="chunk", desc="re-embed",
            disable=not progress,
        )  # fmt: skip
        with bar:
            for start in range(0, len(todo), batch):
                got = src.get(ids=todo[start : start + batch], include=["documents", "metadatas"])
                metas = [m or {} for m in got["metadatas"]]
                texts = [
                    embed_text(plan.prefix_for(m.get(Meta.HEADING_PATH)), d or "")
                    for d, m in zip(got["documents"], metas, strict=True)
                ]
                vectors = embed_model.get_text_embedding_batch(texts)
                if vectors and not report.embedded:
                    record_dimension(dst, len(vectors[0]))
                dst.upsert(
                    ids=got["ids"], embeddings=vectors, documents=got["documents"], metadatas=metas
                )
                report.embedded += len(got["ids"])
                bar.update(len(got["ids"]))
    else:
        raise ReembedError(
            f"{src.name!r} kept changing during {MAX_PASSES} passes (an ingest running?); "
            "run the re-embed again when ingest is done"
        )
    _, report.lexical_rebuilt = ensure_lexical(dst, lexical_dir(target.data_dir, dst), progress)
    report.seconds = time.perf_counter() - started
    return report


def prepare_version(
    settings: Settings,
    registry: Registry,
    version: ModelVersion,
    embed_model: BaseEmbedding | None = None,
    progress: bool = True,
    batch: int = BATCH,
) -> ReembedReport | None:
    """Build the collection an embedding `version` reads from the active version's collection
    (resuming one left half-built); None when it reads the active collection as it is."""
    from core.registry import apply_spec

    if version.kind != "embedding":
        return None
    active = registry.active("embedding")
    source = apply_spec(settings, active)
    target = apply_spec(settings, version)
    if own_collection(source, version) is None:
        return None
    return reembed(source, target, embed_model=embed_model, progress=progress, batch=batch)


def promote_version(
    settings: Settings,
    registry: Registry,
    version_id: int,
    reason: str = "admin",
    progress: bool = True,
    embed_model: BaseEmbedding | None = None,
    batch: int = BATCH,
) -> tuple[RegistryEvent, ReembedReport | None]:
    """Promote a version; an embedding version with its own collection is re-embedded first and
    the registry switched only once that collection is complete. Until then the app answers from
    the old collection, and right after from the new one (it follows the registry per question)."""
    version = registry.get(version_id)
    report = prepare_version(settings, registry, version, embed_model, progress, batch)
    event = registry.promote(version_id, reason=reason)
    return event, report


def collections_in_use(settings: Settings, registry: Registry) -> dict[str, list[str]]:
    """Collection name -> the versions (``embedding v3 (active)``) that read it."""
    from core.registry import apply_spec

    out: dict[str, list[str]] = {}
    for v in registry.versions("embedding"):
        name = apply_spec(settings, v).chroma.collection
        out.setdefault(name, []).append(f"{v.label} ({v.status})")
    return out


def drop_collection(settings: Settings, registry: Registry, name: str) -> list[str]:
    """Delete collection `name` and its lexical index. Refused while the active embedding version
    reads it. Returns the (inactive) versions that read it: they can no longer be rolled back to
    until it is rebuilt (`python -m ingest.reembed build VERSION`)."""
    import shutil

    from chromadb.errors import NotFoundError

    from core.index.lexical import lexical_dir
    from core.index.store import chroma_client
    from core.registry import apply_spec

    active = apply_spec(settings, registry.active("embedding")).chroma.collection
    if name == active:
        raise ReembedError(f"{name!r} is the active collection; promote or roll back first")
    client = chroma_client(settings)
    try:
        collection = client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError) as exc:
        raise ReembedError(f"no collection {name!r}") from exc
    folder = lexical_dir(settings.data_dir, collection)
    client.delete_collection(name)
    shutil.rmtree(folder, ignore_errors=True)
    return collections_in_use(settings, registry).get(name, [])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ingest.reembed",
        description="Blue/green collections of embedding versions. Promoting a version (which "
        "re-embeds first) is `python -m eval promote VERSION`.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    bld = sub.add_parser("build", help="re-embed into the version's collection; do not promote")
    bld.add_argument("version", type=int)
    drop = sub.add_parser("drop", help="delete a collection kept for rollback")
    drop.add_argument("collection")
    drop.add_argument("--yes", action="store_true", help="also when a retired version reads it")
    sub.add_parser("list", help="collections and the embedding versions that read them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _registry(settings: Settings) -> Registry:
    from core.registry import Registry

    registry = Registry(open_database(settings.database_url))
    registry.seed(settings)
    return registry


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings)
    version = registry.get(args.version)
    report = prepare_version(settings, registry, version, progress=not args.no_progress)
    print(report.summary() if report else f"v{args.version} reads the active collection")
    return 0


def cmd_drop(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings)
    users = collections_in_use(settings, registry).get(args.collection, [])
    if users and not args.yes:
        raise ReembedError(
            f"{args.collection!r} is read by {', '.join(users)}; rolling back to it needs the "
            "collection: pass --yes to drop it anyway"
        )
    drop_collection(settings, registry, args.collection)
    print(f"dropped collection {args.collection!r}")
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from core.index.store import chroma_client

    users = collections_in_use(settings, _registry(settings))
    names = [c.name for c in chroma_client(settings).list_collections()]
    for name in sorted(set(names) | set(users)):
        state = "" if name in names else " (missing)"
        print(f"  {name}{state}: {', '.join(users.get(name, [])) or 'no version'}")
    print(f"{len(names)} collections")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 on an error, with what to do)."""
    from core.cli import run_command

    return run_command(_parser(), {"build": cmd_build, "drop": cmd_drop, "list": cmd_list}, argv)


if __name__ == "__main__":
    sys.exit(main())
