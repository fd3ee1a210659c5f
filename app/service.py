"""Wiring the app from settings: collection, embedding model, chat model, chat log, prompt; and the
first-run ingest of the bundled docs so a newcomer can chat at once."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.live import LivePipeline
from app.prompt import load_prompt
from core.chatlog import ChatLog
from core.errors import ConfigError
from core.registry import Registry

if TYPE_CHECKING:
    from core.settings import Settings
    from ingest import IngestReport

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    pipeline: LivePipeline
    chatlog: ChatLog
    first_run: IngestReport | None
    registry: Registry

    def ingest_files(self, paths: list[Path]) -> IngestReport:
        from ingest import ingest_paths

        return ingest_paths(
            self.settings,
            self.pipeline.collection,
            self.pipeline.embed_model,
            paths=paths,
            progress=False,
        )


def build_service(settings: Settings) -> Service:
    """Everything the app needs; registers the configured models as the first active versions on
    first start; ingests `docs/` when the active collection is empty."""
    from ingest import ingest_paths

    chatlog = ChatLog(settings.database_url)
    registry = Registry(chatlog.engine)
    registry.seed(settings)
    pipeline = LivePipeline(settings, registry, chatlog, load_prompt(settings.app.prompt_path))
    current = pipeline.current()  # the active versions; loads (or rebuilds) the lexical index
    collection, embed_model = current.collection, current.embed_model
    first_run = None
    if collection.count() == 0 and settings.app.docs_dir.is_dir():
        log.info("empty collection: ingesting %s", settings.app.docs_dir)
        first_run = ingest_paths(
            settings, collection, embed_model, paths=[settings.app.docs_dir], progress=True
        )
    else:
        from ingest.pipeline import outdated_files

        stale = outdated_files(collection)
        if stale:
            log.warning(
                "%d indexed file(s) were chunked by an older version of ingest; re-embedding "
                "them once (clean text, heading paths, passages that fit the model)",
                len(stale),
            )
            ingest_paths(settings, collection, embed_model, paths=stale, progress=True)
    return Service(settings, pipeline, chatlog, first_run, registry)


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
