"""Shared fixtures: the real packaged embedding model, real Chroma (embedded and a `chroma run`
server on loopback), settings rooted in a temporary data directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# No test may reach the internet; the hub libraries must never try.
stay_offline()
# ONNX exports of the packaged model are made once per machine and shared by every test (and
# every app the tests launch); the cache is keyed by the model's fingerprint.
MODEL_CACHE = Path(tempfile.gettempdir()) / "rag-chat-test-models"
os.environ.setdefault("RAG_EMBEDDING__CACHE_DIR", str(MODEL_CACHE))
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(var, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_up(proc, probe, log_path: Path, what: str, timeout: float) -> None:
    """Wait for a server process to answer `probe`; fail with its log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log_path.read_text()[-3000:]}")
        if probe():
            return
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"{what} did not start within {timeout:.0f} s: {log_path.read_text()[-3000:]}")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


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


def pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=2
        ).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request, tmp_path):
    """A fresh SQLite file, and a fresh database on the real PostgreSQL (skipped when absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rag.db'}"
        return
    yield from pg_database()


def pg_database():
    """Create a throwaway PostgreSQL database; yields its URL, drops it afterwards."""
    if not pg_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    admin_url = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    name = f"ragtest_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
