"""The app answers with the registry's active versions per request, without a restart: in process
on SQLite, and two app processes on one PostgreSQL database that both switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.chatlog import ChatLog
from core.db.database import open_database
from core.registry import Registry
from core.settings import Settings
from ingest import ingest_paths
from rag.live import EmbeddingCache, LivePipeline
from rag.prompt import system_prompt
from tests.support.corpus import make_corpus
from tests.support.paths import ROOT
from tests.support.postgres import pg_database

QUESTION = "Who is the lighthouse keeper of Velmora?"


@pytest.fixture(scope="module")
def corpus_settings(tmp_path_factory, embed_model, embed_id):
    """Embedded Chroma with the test corpus ingested once; settings pointing at it."""
    from core.index.store import chroma_client, open_collection

    root = tmp_path_factory.mktemp("live")
    settings = Settings(data_dir=root / "data")
    settings.app.docs_dir = root / "no-docs"
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    ingest_paths(settings, collection, embed_model, paths=[make_corpus(root / "c")], progress=False)
    return settings


def test_next_question_uses_the_newly_promoted_version(corpus_settings, embed_model, tmp_path):
    settings = corpus_settings.model_copy(deep=True)
    log = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    reg = Registry(log.db)
    seed = reg.seed(settings)["chat"]
    cache = EmbeddingCache()
    cache.put(settings, embed_model)
    live = LivePipeline(settings, reg, log, system_prompt(settings), cache)

    first = list(live.ask("s", QUESTION))[-1]
    many = len(first.sources)
    assert many > 1 and "Orsolya Brandt" in first.text
    list(live.ask("s", QUESTION))
    assert live.rebuilds == 1  # nothing changed: the pipeline is not rebuilt
    candidate = reg.register("chat", "top-1", {"retrieval": {"top_k": 1}}, parent_id=seed.id)
    assert live.rebuilds == 1 and f"chat v{seed.id}" in live.badge  # a candidate answers nothing
    reg.promote(candidate.id)
    after = list(live.ask("s", QUESTION))[-1]
    assert len(after.sources) == 1 and f"chat v{candidate.id}" in live.badge
    reg.rollback("chat")
    back = list(live.ask("s", QUESTION))[-1]
    assert len(back.sources) == many
    assert live.rebuilds == 3
    versions = [t.chat_version_id for t in log.turns()]
    assert versions == [seed.id, seed.id, candidate.id, seed.id]

    # A promoted version that cannot be built keeps the chat answering with what works.
    broken = reg.register("embedding", "no index", {"chroma": {"collection": "never-built"}})
    reg.promote(broken.id)
    still = list(live.ask("s", QUESTION))[-1]
    assert "Orsolya Brandt" in still.text
    assert list(log.turns())[-1].embedding_version_id != broken.id

    # An OpenAI fine-tune carries its base model's retirement date; the badge warns before it.
    reg.rollback("embedding")
    ft = reg.register(
        "chat",
        "ft:gpt-4o-mini",
        {"llm": {"provider": "extractive"}},
        provenance={"retires_on": "2027-01-14"},
    )
    reg.promote(ft.id)
    list(live.ask("s", QUESTION))
    assert "⚠️" in live.badge and "2027-01-14" in live.badge


@pytest.mark.postgres
@pytest.mark.slow
def test_two_app_processes_on_postgres_both_switch(corpus_settings, tmp_path):
    gen = pg_database()
    url = next(gen)
    try:
        env = {
            **os.environ,
            "RAG_DATA_DIR": str(corpus_settings.data_dir),
            "RAG_DATABASE__URL": url,
            "RAG_APP__DOCS_DIR": str(tmp_path / "no-docs"),
            "PYTHONUNBUFFERED": "1",
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.live_worker"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(tmp_path / "worker.log").open("a"),
                text=True,
            )
            for _ in range(2)
        ]

        def ask_all() -> list[dict]:
            out = []
            for p in procs:
                p.stdin.write(QUESTION + "\n")
                p.stdin.flush()
            for p in procs:
                line = p.stdout.readline()
                assert line, "an app process died"
                out.append(json.loads(line))
            return out

        try:
            for p in procs:
                assert json.loads(p.stdout.readline()) == {"ready": True}
            reg = Registry(open_database(url))
            seed = reg.active("chat")
            many = [a["sources"] for a in ask_all()]
            assert many[0] == many[1] > 1
            candidate = reg.register("chat", "top-1", {"retrieval": {"top_k": 1}})
            reg.promote(candidate.id, reason="admin")
            answers = ask_all()
            assert [a["sources"] for a in answers] == [1, 1]
            assert all(f"chat v{candidate.id}" in a["badge"] for a in answers)
            reg.rollback("chat")
            assert [a["sources"] for a in ask_all()] == many
            turns = list(ChatLog(open_database(url)).turns())
            expected = [seed.id] * 2 + [candidate.id] * 2 + [seed.id] * 2
            assert sorted(t.chat_version_id for t in turns) == sorted(expected)
            for session in {t.session_id for t in turns}:  # each process: old, new, old
                mine = [t.chat_version_id for t in turns if t.session_id == session]
                assert mine == [seed.id, candidate.id, seed.id]
        finally:
            for p in procs:
                p.stdin.close()
                p.wait(timeout=30)
    finally:
        gen.close()
