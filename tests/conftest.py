"""Shared fixtures: the real packaged embedding model, real Chroma (embedded and a `chroma run`
server on loopback), settings rooted in a temporary data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.offline import stay_offline
from tests.support.paths import MODEL_CACHE
from tests.support.postgres import pg_database
from tests.support.servers import free_port, port_open, stop, wait_until_up

# No test may reach the internet; the hub libraries must never try.
stay_offline()
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def embed_model():
    """The packaged all-MiniLM-L6-v2, loaded once for the whole session."""
    from core.embedding.providers import build_embedding
    from core.settings import EmbeddingSettings

    return build_embedding(EmbeddingSettings(), cache_dir=MODEL_CACHE)


@pytest.fixture(scope="session")
def embed_id() -> str:
    from core.embedding.providers import embedding_id
    from core.settings import EmbeddingSettings

    return embedding_id(EmbeddingSettings())


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on 127.0.0.1, started once per session."""
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("wb")
    proc = subprocess.Popen(
        [exe, "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, lambda: port_open(port), path / "server.log", "chroma run", 60)
    yield url
    stop(proc)
    log.close()


@pytest.fixture(params=["embedded", "server"])
def settings(request, tmp_path):
    """Settings on a fresh data directory and a fresh collection, for each Chroma backend."""
    from core.settings import Settings

    s = Settings(data_dir=tmp_path / "data")
    s.chroma.collection = f"t-{uuid.uuid4().hex[:12]}"
    if request.param == "server":
        s.chroma.url = request.getfixturevalue("chroma_server")
    return s


@pytest.fixture
def embedded_settings(tmp_path):
    """Settings on the embedded store only (for tests whose subject is not the Chroma backend)."""
    from core.settings import Settings

    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def collection(settings, embed_id):
    from core.index.store import chroma_client, open_collection

    client = chroma_client(settings)
    col = open_collection(client, settings.chroma.collection, embed_id)
    yield col
    if settings.chroma.url:
        client.delete_collection(settings.chroma.collection)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request, tmp_path):
    """A fresh SQLite file, and a fresh database on the real PostgreSQL (skipped when absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rag.db'}"
        return
    yield from pg_database()
