"""Ingest into a real Chroma (embedded and `chroma run`) with the real packaged embedding model."""

from __future__ import annotations

import json
import logging

import pytest
import respx

from core.errors import ConfigError, EmbeddingMismatchError
from ingest import RecordFields, ingest_paths
from ingest.pipeline import read_state
from tests.support.corpus import make_corpus, make_pdf
from tests.support.paths import SHARED_DATA


def top_hit(collection, embed_model, question: str) -> dict:
    res = collection.query(
        query_embeddings=[embed_model.get_query_embedding(question)],
        n_results=1,
        include=["documents", "metadatas", "distances"],
    )
    return {"text": res["documents"][0][0], **res["metadatas"][0][0]}


def snapshot(collection) -> dict[str, tuple[str, str]]:
    """Chunks by id: text and metadata, but for when each was written (`indexed_at`)."""
    got = collection.get(include=["documents", "metadatas"])
    return {
        i: (d, json.dumps({k: v for k, v in m.items() if k != "indexed_at"}, sort_keys=True))
        for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    }


def run(settings, collection, embed_model, *paths, **kw):
    kw.setdefault("progress", False)
    return ingest_paths(settings, collection, embed_model, paths=list(paths), **kw)


def test_mixed_corpus_is_retrievable_with_pages_and_titles(
    settings, collection, embed_model, tmp_path
):
    corpus = make_corpus(tmp_path / "corpus")
    report = run(settings, collection, embed_model, corpus, fields=RecordFields("support"))
    # csv uses `support`; jsonl records lack it and fail by name, everything else goes in.
    assert report.new == 6
    assert [name for name, _ in report.failed] == [str(corpus / "faq.jsonl")]
    assert "no field 'support'" in report.failed[0][1]

    hit = top_hit(collection, embed_model, "Who keeps the lighthouse?")
    assert "Orsolya Brandt" in hit["text"]
    assert hit["page"] == 2 and hit["file_name"] == "velmora.pdf"
    assert hit["title"] == "Velmora Guide"
    hit = top_hit(collection, embed_model, "When is the lantern festival?")
    assert hit["page"] == 3
    assert (
        "four eggs" in top_hit(collection, embed_model, "How many eggs in the lemon cake?")["text"]
    )
    hit = top_hit(collection, embed_model, "Which gas do plants take in?")
    assert "carbon dioxide" in hit["text"] and hit["row"] == 0
    hit = top_hit(collection, embed_model, "When is the coffee machine descaled?")
    assert hit["title"] == "Office handbook"
    assert top_hit(collection, embed_model, "watering tomatoes")["title"] == "Garden notes"
    docs = collection.get(include=["documents"])["documents"]
    assert not any("not indexed" in d or "color:red" in d for d in docs)
    assert all(len(m["content_hash"]) == 16 for m in collection.get()["metadatas"])


def test_rerun_embeds_nothing_and_change_replaces_old_chunks(
    settings, collection, embed_model, tmp_path
):
    corpus = make_corpus(tmp_path / "corpus")
    first = run(settings, collection, embed_model, corpus)
    before = snapshot(collection)
    again = run(settings, collection, embed_model, corpus)
    assert (again.new, again.changed, again.unchanged) == (0, 0, first.new)
    assert again.chunks_written == 0 and snapshot(collection) == before

    (corpus / "plain.txt").write_text("The spare key now lives in the red flowerpot.\n")
    changed = run(settings, collection, embed_model, corpus)
    assert (changed.new, changed.changed) == (0, 1)
    assert changed.chunks_written == 1 and changed.chunks_deleted == 1
    docs = collection.get(include=["documents"])["documents"]
    assert not any("blue door" in d for d in docs)
    assert "red flowerpot" in top_hit(collection, embed_model, "Where is the spare key?")["text"]
    assert collection.count() == len(before)


def test_prune_removes_only_vanished_files(settings, collection, embed_model, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    run(settings, collection, embed_model, corpus)
    total = collection.count()
    (corpus / "notes.md").unlink()
    kept = run(settings, collection, embed_model, corpus)
    assert kept.pruned == 0 and collection.count() == total  # without --prune nothing goes
    pruned = run(settings, collection, embed_model, corpus, prune=True)
    assert pruned.pruned == 1 and pruned.chunks_deleted == 1
    assert collection.count() == total - 1
    assert not collection.get(where={"file_name": "notes.md"})["ids"]


def test_changed_chunking_reembeds(settings, collection, embed_model, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "long.txt").write_text(" ".join(f"Sentence number {i} is here." for i in range(300)))
    run(settings, collection, embed_model, corpus)
    coarse = collection.count()
    settings.chunking.size, settings.chunking.overlap = 64, 8
    report = run(settings, collection, embed_model, corpus)
    assert report.changed == 1
    assert collection.count() > coarse
    assert len(read_state(collection)) == 1


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the pipeline catches it."""


class CrashingCollection:
    """The real collection, except that the n-th upsert writes only half its chunks and dies."""

    def __init__(self, real, crash_on: int):
        self._real, self._calls, self._crash_on = real, 0, crash_on

    def __getattr__(self, name):
        return getattr(self._real, name)

    def upsert(self, ids, embeddings, documents, metadatas):
        self._calls += 1
        if self._calls == self._crash_on:
            half = len(ids) // 2
            if half:
                self._real.upsert(
                    ids=ids[:half],
                    embeddings=embeddings[:half],
                    documents=documents[:half],
                    metadatas=metadatas[:half],
                )
            raise Crash
        self._real.upsert(ids=ids, embeddings=embeddings, documents=documents, metadatas=metadatas)


@pytest.mark.parametrize("crash_on", [1, 2, 3])
def test_interrupted_run_recovers_to_clean_result(
    settings, collection, embed_model, tmp_path, monkeypatch, crash_on
):
    from core.index.store import chroma_client, open_collection
    from ingest import pipeline

    monkeypatch.setattr(pipeline, "FLUSH_CHUNKS", 2)  # several flushes in a small corpus
    corpus = make_corpus(tmp_path / "corpus")
    run(settings, collection, embed_model, corpus)
    # The second run changes three files and adds one, then dies part-way through writing.
    (corpus / "plain.txt").write_text("The spare key now lives in the red flowerpot.\n")
    (corpus / "notes.md").write_text("# Garden notes\n\nBasil is watered at noon.\n")
    (corpus / "page.html").write_text("<p>The lemon cake needs five eggs.</p>")
    make_pdf(tmp_path / "corpus" / "more.pdf", ["Extra page one.", "Extra page two."])
    with pytest.raises(Crash):
        run(settings, CrashingCollection(collection, crash_on), embed_model, corpus)
    recovered = run(settings, collection, embed_model, corpus)
    assert not recovered.failed

    clean_settings = settings.model_copy(deep=True)
    clean_settings.chroma.collection += "-clean"
    clean = open_collection(
        chroma_client(clean_settings),
        clean_settings.chroma.collection,
        collection.metadata["embed_model"],
    )
    run(clean_settings, clean, embed_model, corpus)
    assert snapshot(collection) == snapshot(clean)


def test_bad_inputs_are_reported_by_name_and_the_rest_goes_in(
    settings, collection, embed_model, tmp_path, caplog
):
    corpus = tmp_path / "bad"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Penguins live in the southern hemisphere.")
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    (corpus / "empty.md").write_text("   \n")
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02binary\x00")
    (corpus / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (corpus / "broken.jsonl").write_text('{"text": "fine"}\n{not json\n')
    (corpus / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    with caplog.at_level(logging.DEBUG):
        report = run(settings, collection, embed_model, corpus, tmp_path / "missing-dir")
    # Each failure is said once, in the report: no parser's warning about the file beside it,
    # and no library's debug chatter (bm25s sets its own logger to DEBUG).
    assert not [r for r in caplog.records if r.name.split(".")[0] in {"pypdf", "bm25s"}]
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in report.failed}
    assert reasons.keys() == {
        "corrupt.pdf",
        "empty.md",
        "binary.txt",
        "latin1.txt",
        "broken.jsonl",
        "broken.docx",
        "missing-dir",
    }
    assert "corrupt or unreadable PDF" in reasons["corrupt.pdf"]
    assert reasons["empty.md"] == "empty file"
    assert reasons["binary.txt"] == "binary content, not text"
    assert "not valid UTF-8" in reasons["latin1.txt"]
    assert reasons["broken.jsonl"].startswith("line 2: not JSON")
    assert "DOCX" in reasons["broken.docx"]
    assert reasons["missing-dir"] == "no such file or directory"
    assert report.new == 1 and collection.count() == 1


def test_changed_file_that_turns_corrupt_keeps_its_old_chunks(
    settings, collection, embed_model, tmp_path
):
    corpus = tmp_path / "c"
    corpus.mkdir()
    make_pdf(corpus / "guide.pdf")
    run(settings, collection, embed_model, corpus)
    count = collection.count()
    (corpus / "guide.pdf").write_bytes(b"%PDF-1.4 truncated")
    report = run(settings, collection, embed_model, corpus, prune=True)
    assert len(report.failed) == 1 and collection.count() == count


def test_other_embedding_model_is_refused(settings, collection, embed_id):
    from core.index.store import chroma_client, open_collection

    collection.add(ids=["x"], embeddings=[[0.1] * 384], documents=["x"])
    with pytest.raises(EmbeddingMismatchError, match="was built with embedding model"):
        open_collection(chroma_client(settings), settings.chroma.collection, "openai:other")
    assert open_collection(chroma_client(settings), settings.chroma.collection, embed_id)


def test_dataset_rows_with_chosen_text_and_metadata(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection

    collection = open_collection(chroma_client(embedded_settings), "sciq", embed_id)
    data = tmp_path / "sciq.csv"
    rows = [
        ("What do bees make?", "Bees make honey from the nectar of flowers."),
        ("What is ice?", "Ice is water frozen into a solid."),
        ("Blank?", ""),
    ]
    data.write_text(
        "question,support\n" + "".join(f'"{q}","{s}"\n' for q, s in rows), encoding="utf-8"
    )
    fields = RecordFields("support", ["question"])
    report = run(embedded_settings, collection, embed_model, datasets=[str(data)], fields=fields)
    assert report.new == 2 and [n for n, _ in report.failed] == [f"{data}[train] row 2"]
    hit = top_hit(collection, embed_model, "honey from nectar")
    assert hit["question"] == "What do bees make?" and hit["row"] == 0
    again = run(embedded_settings, collection, embed_model, datasets=[str(data)], fields=fields)
    assert again.unchanged == 2 and again.chunks_written == 0
    data.write_text("question,support\n" + f'"{rows[0][0]}","{rows[0][1]}"\n')
    pruned = run(
        embedded_settings, collection, embed_model, datasets=[str(data)], fields=fields, prune=True
    )
    assert pruned.pruned == 1 and collection.count() == 1


def test_cli_summary_and_exit_status(embedded_settings, tmp_path, monkeypatch, capsys):
    from ingest.__main__ import main

    monkeypatch.setenv("RAG_DATA_DIR", str(embedded_settings.data_dir))
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.md").write_text("# A\n\nAlpha is the first letter.\n")
    assert main([str(good), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "files seen 1, new 1, changed 0, unchanged 0, failed 0" in out.out
    (good / "b.txt").write_bytes(b"\x00\x00")
    assert main([str(good), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "unchanged 1, failed 1" in out.out
    assert f"failed: {good / 'b.txt'}: binary content" in out.err
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "nope")
    assert main([str(good), "--no-progress"]) == 2
    assert "known: local, openai" in capsys.readouterr().err


@pytest.mark.skipif(
    not (SHARED_DATA / "sciq" / "validation.csv").exists(), reason="../shared/data is absent"
)
def test_real_sciq_supports_are_retrievable(embedded_settings, embed_model, embed_id):
    import csv

    from core.index.store import chroma_client, open_collection

    path = SHARED_DATA / "sciq" / "validation.csv"
    head = list(csv.DictReader(path.open()))[:60]
    subset = embedded_settings.data_dir / "sciq-head.csv"
    subset.parent.mkdir(parents=True, exist_ok=True)
    with subset.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(head[0]))
        writer.writeheader()
        writer.writerows(head)
    collection = open_collection(chroma_client(embedded_settings), "sciq", embed_id)
    fields = RecordFields("support", ["question"])
    run(embedded_settings, collection, embed_model, datasets=[str(subset)], fields=fields)
    hits = sum(
        top_hit(collection, embed_model, row["question"])["question"] == row["question"]
        for row in head
    )
    assert hits / len(head) >= 0.6


@respx.mock
def test_openai_embedding_provider_through_the_sdk(tmp_path):
    """The `openai` embedding provider, via the real SDK against a fake /v1/embeddings."""
    import httpx

    from core.embedding.providers import build_embedding, embedding_id
    from core.index.store import chroma_client, open_collection
    from core.settings import EmbeddingSettings, Settings

    def embed(request):
        texts = json.loads(request.content)["input"]
        # deterministic 8-d vectors: texts about keys point one way, everything else another
        vecs = [[1.0 if "key" in t else 0.0, 0.1, *([0.0] * 6)] for t in texts]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 5, "total_tokens": 5},
            },
        )

    route = respx.post("https://api.openai.com/v1/embeddings").mock(side_effect=embed)
    settings = Settings(data_dir=tmp_path / "data")
    settings.embedding = EmbeddingSettings(provider="openai", api_key="sk-test")
    embed_model = build_embedding(settings.embedding)
    name = embedding_id(settings.embedding)
    assert name == "openai:text-embedding-3-small"
    with pytest.raises(ConfigError, match="not a valid collection name"):
        open_collection(chroma_client(settings), "oa", name)
    collection = open_collection(chroma_client(settings), "oa-test", name)
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The spare key hangs behind the blue door.")
    (corpus / "b.txt").write_text("Penguins live in the southern hemisphere.")
    report = run(settings, collection, embed_model, corpus)
    assert report.new == 2 and route.called
    assert "spare key" in top_hit(collection, embed_model, "where is the key")["text"]
    assert collection.metadata["embed_dim"] == 8
