"""The indexed-documents list and removing a document, on a real Chroma (embedded and `chroma
run`) with the real lexical index and the packaged embedding model; and keeping uploads, through
the app's service, where a failed or interrupted upload leaves nothing behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime

import pytest

from core.errors import SourceError
from core.index.lexical import LexicalSource, lexical_dir, load_lexical
from core.settings import LLMSettings
from ingest import ingest_paths
from ingest.documents import list_documents, remove_document
from rag.pipeline import RagPipeline
from rag.prompt import system_prompt
from rag.providers import build_chat_model
from tests.support.corpus import make_corpus, make_pdf
from tests.support.paths import ROOT

QUESTION = "Who is the lighthouse keeper of Velmora?"


def ask(settings, collection, embed_model, question: str):
    lexical = LexicalSource(collection, lexical_dir(settings.data_dir, collection))
    pipe = RagPipeline(
        collection,
        embed_model,
        build_chat_model(LLMSettings()),
        None,
        system_prompt(settings),
        settings.retrieval,
        lexical,
    )
    return list(pipe.ask("s", question))[-1]


def test_list_then_remove_a_document_from_every_index(settings, collection, embed_model, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    uploaded = make_pdf(uploads / "velmora.pdf")
    ingest_paths(settings, collection, embed_model, paths=[corpus, uploaded], progress=False)

    docs = {(d.name, d.source): d for d in list_documents(collection)}
    assert [name for name, _ in docs] == [
        "faq.jsonl",
        "handbook.docx",
        "notes.md",
        "page.html",
        "plain.txt",
        "records.csv",
        "velmora.pdf",
        "velmora.pdf",
    ]
    pdf = docs[("velmora.pdf", str(uploaded.resolve()))]
    assert pdf.page_count == 3 and pdf.chunks >= 3
    assert datetime.fromisoformat(pdf.indexed_at).tzinfo is not None
    assert "Garden notes" in docs[("notes.md", str((corpus / "notes.md").resolve()))].headings

    # Both copies answer before; the uploaded one is removed with its file, the other stays.
    before = ask(settings, collection, embed_model, QUESTION)
    assert {s.source for s in before.sources} >= {pdf.source}
    ids = set(collection.get(where={"source": pdf.source}, include=[])["ids"])
    removed = remove_document(
        collection, pdf.source, lexical_dir(settings.data_dir, collection), uploads
    )
    assert removed.chunks == len(ids) == pdf.chunks and removed.file_removed == uploaded
    assert not uploaded.exists() and (corpus / "velmora.pdf").exists()
    assert collection.get(where={"source": pdf.source}, include=[])["ids"] == []
    index = load_lexical(lexical_dir(settings.data_dir, collection))
    assert not ids & set(index.ids) and len(index) == collection.count()
    hits = {h.chunk_id for h in index.search("Orsolya Brandt lighthouse keeper", 20)}
    assert hits and not hits & ids  # the other copy still matches; the removed one never
    after = ask(settings, collection, embed_model, QUESTION)
    assert pdf.source not in {s.source for s in after.sources}
    assert "Orsolya Brandt" in after.text  # from the copy that stays

    # Removing the last copy: the fact is gone from answers; a file outside uploads is kept.
    other = str((corpus / "velmora.pdf").resolve())
    gone = remove_document(collection, other, lexical_dir(settings.data_dir, collection), uploads)
    assert gone.file_removed is None and (corpus / "velmora.pdf").exists()
    final = ask(settings, collection, embed_model, QUESTION)
    assert "Orsolya" not in final.text
    assert all(s.file_name != "velmora.pdf" for s in final.sources)
    assert "velmora.pdf" not in [d.name for d in list_documents(collection)]
    with pytest.raises(SourceError, match="not in the index"):
        remove_document(collection, other, None)


def test_ingest_cli_fails_fast_on_a_missing_path(tmp_path):
    """A mistyped path is an error before anything is loaded: exit 2, nothing created."""
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "ingest", str(tmp_path / "no-such-dir"), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert f"no such file or folder: {tmp_path / 'no-such-dir'}" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "data").exists()


@pytest.fixture
def service(embedded_settings, tmp_path):
    from app.service import build_service

    docs = tmp_path / "first-run"
    docs.mkdir()
    (docs / "intro.md").write_text("# Intro\n\n## Welcome\n\nThe harbour opens at dawn.\n")
    embedded_settings.app.docs_dir = docs
    svc = build_service(embedded_settings, warm=False)
    yield svc
    svc.chatlog.db.dispose()


def test_uploads_keep_good_files_only_and_put_back_a_replaced_one(service, tmp_path):
    picked = tmp_path / "picked"
    picked.mkdir()
    good = make_pdf(picked / "velmora.pdf")
    (picked / "empty.txt").write_text("")
    (picked / "broken.pdf").write_bytes(b"%PDF-1.4 nope")
    results = service.add_uploads([good, picked / "empty.txt", picked / "broken.pdf"])
    by_name = {r.name: r for r in results}
    assert by_name["velmora.pdf"].outcome == "new"
    assert by_name["empty.txt"].outcome == by_name["broken.pdf"].outcome == "failed"
    assert by_name["empty.txt"].reason and by_name["broken.pdf"].reason
    assert sorted(p.name for p in service.uploads_dir.iterdir()) == ["velmora.pdf"]
    assert not list(service.settings.data_dir.glob(".replaced-*"))
    assert [r.outcome for r in service.add_uploads([good])] == ["unchanged"]

    # A corrupt file uploaded under the name of a good one: the good one stays, still indexed.
    shutil.copyfile(picked / "broken.pdf", picked / "replacement.pdf")
    (picked / "replacement.pdf").rename(picked / "velmora.pdf")
    [result] = service.add_uploads([picked / "velmora.pdf"])
    assert result.outcome == "failed" and "earlier upload is kept" in result.reason
    kept = service.uploads_dir / "velmora.pdf"
    assert kept.read_bytes().startswith(b"%PDF") and len(kept.read_bytes()) > 100
    names = [d.name for d in service.documents()]
    assert names == ["intro.md", "velmora.pdf"]


def test_an_upload_interrupted_midway_keeps_only_what_was_indexed(service, tmp_path, monkeypatch):
    """The index dies after the first file went in (simulated: the real ingest of the first file,
    then the error a dead Chroma server raises); the second copy is not left behind."""
    first = tmp_path / "first.md"
    first.write_text("# First\n\nThe ferry leaves at noon.\n")
    second = tmp_path / "second.md"
    second.write_text("# Second\n\nThe market closes at five.\n")
    real = service.ingest_files

    def dies_after_the_first(paths):
        real(paths[:1])
        raise ConnectionError("Chroma server went away")

    monkeypatch.setattr(service, "ingest_files", dies_after_the_first)
    with pytest.raises(ConnectionError):
        service.add_uploads([first, second])
    assert sorted(p.name for p in service.uploads_dir.iterdir()) == ["first.md"]
    assert [d.name for d in service.documents()] == ["first.md", "intro.md"]


def test_sections_merged_into_one_chunk_stay_in_the_outline(
    settings, collection, embed_model, tmp_path
):
    """Short sections are packed into one chunk that fits the window; each still shows in the
    document's outline, so the first screen can suggest a question about it."""
    from app.overview import suggest_questions

    doc = tmp_path / "guide.md"
    doc.write_text(
        "# Ferry guide\n\n## Buying tickets\n\nTickets are sold at the harbour kiosk.\n\n"
        "## Taking a bicycle\n\nBicycles ride free on the lower deck.\n\n"
        "## Lost property\n\nAsk the purser on board.\n"
    )
    ingest_paths(settings, collection, embed_model, paths=[doc], progress=False)
    assert collection.count() == 1  # all three sections in one chunk
    (info,) = list_documents(collection)
    assert info.headings == [
        "Ferry guide",
        "Ferry guide > Buying tickets",
        "Ferry guide > Taking a bicycle",
        "Ferry guide > Lost property",
    ]
    assert suggest_questions([info]) == [
        "What do the documents say about buying tickets?",
        "What do the documents say about taking a bicycle?",
        "What do the documents say about lost property?",
    ]
