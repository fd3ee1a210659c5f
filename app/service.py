"""Wiring the app from settings: collection, embedding model, chat model, chat log, prompt; the
first-run ingest of the bundled docs so a newcomer can chat at once; and the admin's document
operations (list, upload, remove) over the active collection."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.chatlog import ChatLog
from core.db.database import open_database
from core.errors import ConfigError
from core.registry import Registry
from rag.live import LivePipeline
from rag.prompt import system_prompt

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from core.settings import Settings
    from ingest import IngestReport
    from ingest.documents import DocumentInfo, RemovedDocument

log = logging.getLogger(__name__)


@dataclass
class UploadResult:
    """What became of one uploaded file: `outcome` is new, changed, unchanged or failed."""

    name: str
    outcome: str
    reason: str = ""


@dataclass
class Service:
    settings: Settings
    pipeline: LivePipeline
    chatlog: ChatLog
    first_run: IngestReport | None
    registry: Registry
    _documents: tuple[Any, list[DocumentInfo]] | None = field(default=None, repr=False)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def ingest_files(self, paths: list[Path]) -> IngestReport:
        from ingest import ingest_paths

        return ingest_paths(
            self.settings,
            self.pipeline.collection,
            self.pipeline.embed_model,
            paths=paths,
            progress=False,
        )

    def warm_up(self) -> None:
        """Load the active models and the lexical index now rather than on the first question,
        then re-embed files an older ingest chunked. The app calls this once it serves."""
        from ingest import ingest_paths
        from ingest.pipeline import outdated_files

        current = self.pipeline.current()
        stale = outdated_files(current.collection)
        if stale:
            log.warning(
                "%d indexed file(s) were chunked by an older version of ingest; re-embedding "
                "them once (clean text, heading paths, passages that fit the model)",
                len(stale),
            )
            with self._write_lock:
                ingest_paths(
                    self.settings,
                    current.collection,
                    current.embed_model,
                    paths=stale,
                    progress=True,
                )

    def collection(self) -> Collection:
        """The active collection (no embedding model needed)."""
        return self.pipeline.active_collection()

    def documents(self) -> list[DocumentInfo]:
        """The indexed documents of the active collection; re-read only after it changed."""
        from core.index.lexical import current_build, lexical_dir
        from ingest.documents import list_documents

        collection = self.collection()
        pointer = current_build(lexical_dir(self.settings.data_dir, collection))
        key = (collection.id, collection.count(), pointer)
        cached = self._documents
        if cached is not None and cached[0] == key:
            return cached[1]
        docs = list_documents(collection)
        self._documents = (key, docs)
        return docs

    def remove_document(self, source: str) -> RemovedDocument:
        """Remove a document from Chroma and the lexical index, and its upload when it was one."""
        from core.index.lexical import lexical_dir
        from ingest.documents import remove_document

        collection = self.collection()
        with self._write_lock:
            return remove_document(
                collection,
                source,
                lexical_dir(self.settings.data_dir, collection),
                self.uploads_dir,
            )

    def add_uploads(self, files: list[Path]) -> list[UploadResult]:
        """Copy uploaded files into the uploads folder and index them. A file that fails is not
        kept (a same-named earlier upload is put back). If copying or indexing stops midway, the
        copies the index holds chunks of are kept, the rest undone, and the error is raised."""
        uploads = self.uploads_dir
        uploads.mkdir(parents=True, exist_ok=True)
        by_name: dict[str, Path] = {}
        for f in files:
            by_name[Path(f).name] = Path(f)  # the same name twice: the last one wins
        with self._write_lock:
            backups = Path(tempfile.mkdtemp(prefix=".replaced-", dir=uploads.parent))
            placed: list[tuple[Path, Path | None]] = []
            try:
                for name, src in by_name.items():
                    dest = uploads / name
                    backup = None
                    if dest.exists():
                        backup = backups / name
                        shutil.move(dest, backup)
                    placed.append((dest, backup))
                    shutil.copyfile(src, dest)
                report = self.ingest_files([dest for dest, _ in placed])
                return _settle(placed, report)
            except Exception:
                collection = self.collection()
                for dest, backup in placed:
                    where = {"source": str(dest.resolve())}
                    if not collection.get(where=where, limit=1, include=[])["ids"]:
                        _put_back(dest, backup)
                raise
            finally:
                shutil.rmtree(backups, ignore_errors=True)


def _settle(placed: list[tuple[Path, Path | None]], report: IngestReport) -> list[UploadResult]:
    """Each placed upload's outcome; failed ones are undone."""
    failed = {str(Path(n).resolve()): reason for n, reason in report.failed}
    outcomes = {str(Path(n).resolve()): o for n, o in report.outcomes.items()}
    results = []
    for dest, backup in placed:
        key = str(dest.resolve())
        if key in failed:
            _put_back(dest, backup)
            reason = failed[key] + (" (the earlier upload is kept)" if backup else "")
            results.append(UploadResult(dest.name, "failed", reason))
        else:
            results.append(UploadResult(dest.name, outcomes.get(key, "unchanged")))
    return results


def _put_back(dest: Path, backup: Path | None) -> None:
    """Undo one upload: the earlier file of that name back in place, or nothing there."""
    dest.unlink(missing_ok=True)
    if backup is not None and backup.exists():
        shutil.move(backup, dest)


def build_service(settings: Settings, warm: bool = True) -> Service:
    """Everything the app needs; registers the configured models as the first active versions on
    first start; ingests `docs/` when the active collection is empty. With `warm` false the
    models load on `Service.warm_up()` or the first question, whichever comes first."""
    chatlog = ChatLog(open_database(settings.database_url))
    registry = Registry(chatlog.db)
    registry.seed(settings)
    pipeline = LivePipeline(settings, registry, chatlog, system_prompt(settings))
    first_run = None
    if pipeline.active_collection().count() == 0 and settings.app.docs_dir.is_dir():
        from ingest import ingest_paths

        current = pipeline.current()
        log.info("empty collection: ingesting %s", settings.app.docs_dir)
        first_run = ingest_paths(
            settings,
            current.collection,
            current.embed_model,
            paths=[settings.app.docs_dir],
            progress=True,
        )
    service = Service(settings, pipeline, chatlog, first_run, registry)
    if warm:
        service.warm_up()
    return service


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the app on this machine ("" means every interface)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def admin_allowed(settings: Settings) -> bool:
    """Admin functions are served on loopback, or anywhere once an admin password is set."""
    return is_loopback(settings.app.host) or settings.app.admin_password is not None


def require_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass --port or set RAG_APP__PORT"
            ) from exc
