"""Retrieval quality features on real Chroma with the packaged model: main-content HTML, heading
paths, chunks that fit the model's window, hybrid search, and the lexical index kept in step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.index.lexical import current_stamp, lexical_dir, load_lexical
from ingest import ingest_paths
from tests.support.corpus import make_corpus
from tests.support.paths import ROOT

# The PostgreSQL manual (Debian's postgresql-doc-15), used when installed: real HTML pages.
MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")

FRAME_TOPICS = [
    "Configuring the replication slots",
    "Tuning the autovacuum daemon",
    "Managing tablespaces on disk",
    "Writing trigger functions",
    "Installing from source code",
    "Client authentication methods",
    "Monitoring disk usage",
    "Regression tests",
]
MAIN_TEXT = (
    "The ferry to Kessel Island leaves the north pier every morning at seven thirty. "
    "Tickets are sold on board and bicycles travel free of charge."
)


def framed_page(title: str, body: str) -> str:
    """A documentation page with a heavy frame around a short main text."""
    nav = "".join(f'<li><a href="t{i}.html">{t}</a></li>' for i, t in enumerate(FRAME_TOPICS))
    return f"""<!DOCTYPE html><html><head><title>{title}</title></head><body>
<div class="navheader"><table><tr><td><a href="prev.html">Prev</a></td>
<td>Chapter 7. Travel</td><td><a href="next.html">Next</a></td></tr></table></div>
<div class="sidebar"><h3>Topics</h3><ul>{nav}</ul></div>
<div class="breadcrumb">Home / Guides / Travel / {title}</div>
<div class="toc"><dl><dt><a href="a.html">7.1 Getting there by air</a></dt>
<dt><a href="b.html">7.2 Getting there by sea</a></dt></dl></div>
<div class="section"><h2 class="title">{title}</h2><p>{body}</p>
<div class="note"><h3 class="title">Note</h3><p>Timetables change in winter.</p></div></div>
<div class="navfooter"><a href="prev.html">Prev</a> <a href="index.html">Home</a>
<a href="next.html">Next</a></div>
<footer>Copyright 2026 The Island Travel Group. All rights reserved.</footer>
</body></html>"""


def decoy_index_page() -> str:
    links = "".join(
        f'<li><a href="p{i}.html">{t}</a></li>'
        for i, t in enumerate(
            ["Ferry to Kessel Island", "Kessel Island ferry timetable", *FRAME_TOPICS]
        )
    )
    return f"<html><head><title>Index</title></head><body><ul>{links}</ul></body></html>"


def all_chunks(collection) -> list[tuple[str, dict]]:
    got = collection.get(include=["documents", "metadatas"])
    return list(zip(got["documents"], got["metadatas"], strict=True))


def make_retriever(settings, collection, embed_model, **overrides):
    from core.index.lexical import LexicalSource
    from rag.retriever import HybridRetriever

    retrieval = settings.retrieval.model_copy(update=overrides)
    lexical = LexicalSource(collection, lexical_dir(settings.data_dir, collection))
    return HybridRetriever(collection, embed_model, retrieval, lexical)


def ask(retriever, embed_model, question: str, k: int = 4):
    return retriever.ranked(question, embed_model.get_query_embedding(question), k=k)


def test_html_frame_never_reaches_the_index_and_the_real_page_ranks_first(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection

    docs = tmp_path / "site"
    docs.mkdir()
    (docs / "ferry.html").write_text(framed_page("Ferry to Kessel Island", MAIN_TEXT))
    (docs / "index.html").write_text(decoy_index_page())
    for i, topic in enumerate(FRAME_TOPICS[:4]):
        (docs / f"topic{i}.html").write_text(
            framed_page(topic, f"This page explains {topic.lower()} in detail for operators.")
        )
    col = open_collection(chroma_client(embedded_settings), "site", embed_id)
    report = ingest_paths(embedded_settings, col, embed_model, paths=[docs], progress=False)
    assert not report.failed
    frame_bits = ["Prev", "Next", "Copyright", "Home / Guides", "7.2 Getting there", "Topics"]
    for text, meta in all_chunks(col):
        if meta["file_name"] == "index.html":
            continue
        for bit in frame_bits + FRAME_TOPICS[4:]:
            assert bit not in text, (meta["file_name"], bit, text)
    ferry = [(t, m) for t, m in all_chunks(col) if m["file_name"] == "ferry.html"]
    assert any("Tickets are sold on board" in t for t, _ in ferry)
    # The admonition heading is not a section: its text stays under the page's own heading.
    assert {m["heading_path"] for _, m in ferry} == {"Ferry to Kessel Island"}

    for hybrid in (True, False):
        found = ask(
            make_retriever(embedded_settings, col, embed_model, hybrid=hybrid),
            embed_model,
            "When does the ferry to Kessel Island leave?",
        )
        assert found[0].metadata["file_name"] == "ferry.html", hybrid


def test_structured_documents_carry_heading_paths(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection
    from tests.support.corpus import make_docx

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# Operations guide\n\nIntro text about operations.\n\n"
        "## Backups\n\nBackups run nightly at two.\n\n"
        "### Restoring\n\nRestore with the restore-tool command.\n\n"
        "```bash\n# not a heading inside code\nrestore-tool --latest\n```\n\n"
        "## Upgrades\n\nUpgrades happen on Sundays.\n"
    )
    import docx

    make_docx(docs / "hand.docx", [])
    document = docx.Document(str(docs / "hand.docx"))
    document.add_paragraph("Security", style="Heading 1")
    document.add_paragraph("Badges must be worn at all times in the building.")
    document.save(str(docs / "hand.docx"))
    from ingest.loaders import load_sections

    def paths(name: str) -> dict[str, str]:
        sections = load_sections(docs / name, (docs / name).read_bytes())
        return {s.text.split("\n")[0]: s.metadata.get("heading_path") for s in sections}

    guide = paths("guide.md")
    assert guide["Intro text about operations."] == "Operations guide"
    assert guide["Backups run nightly at two."] == "Operations guide > Backups"
    assert guide["Restore with the restore-tool command."] == (
        "Operations guide > Backups > Restoring"
    )
    assert guide["Upgrades happen on Sundays."] == "Operations guide > Upgrades"
    hand = paths("hand.docx")
    assert hand["Badges must be worn at all times in the building."] == (
        "Office handbook > Security"
    )

    # Short neighbouring sections are embedded together: the chunk's path is what they share, and
    # each part's own heading stays in its text.
    col = open_collection(chroma_client(embedded_settings), "structured", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[docs], progress=False)
    guide_chunks = [(t, m) for t, m in all_chunks(col) if m["file_name"] == "guide.md"]
    assert len(guide_chunks) == 1
    text, meta = guide_chunks[0]
    assert meta["heading_path"] == "Operations guide"
    assert "Backups\n\nBackups run nightly" in text
    assert "Backups > Restoring\n\nRestore with" in text
    assert "# not a heading inside code" in text


def test_no_chunk_exceeds_the_embedding_window(embedded_settings, embed_model, embed_id, tmp_path):
    """Checked with the model's own tokenizer on real files: the bundled docs, a mixed corpus,
    long generated text, and part of the manual when the benchmark data is present."""
    from core.index.store import chroma_client, open_collection
    from ingest.chunking import embed_text, plan_chunks

    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "long.md").write_text(
        "# Long\n\n## A section with a long heading about many things\n\n"
        + " ".join(f"Sentence {i} mentions configuration_parameter_{i} twice." for i in range(900))
    )
    paths = [corpus, ROOT / "docs"]
    manual = sorted(MANUAL.glob("sql-*.html"))[:40] if MANUAL.is_dir() else []
    col = open_collection(chroma_client(embedded_settings), "window", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=paths + manual, progress=False)
    plan = plan_chunks(embedded_settings.chunking, embed_model)
    from tokenizers import Tokenizer

    from core.embedding.window import packaged_model_dir

    # The model's own tokenizer file, as the torch backend loads it.
    tokenizer = Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    assert plan.window == 512 - 2  # the packaged model is read at 512 word pieces
    chunks = all_chunks(col)
    assert len(chunks) > 20
    for text, meta in chunks:
        embedded = embed_text(plan.prefix_for(meta.get("heading_path")), text)
        assert len(tokenizer.encode(embedded).ids) <= 512, meta


def test_a_chunk_cut_inside_a_code_block_is_read_with_the_block_mended(
    embedded_settings, embed_model, embed_id, tmp_path
):
    """A listing longer than a chunk is embedded as cut, and the chunk says where it was cut:
    its reader (the answerer, a source card) reopens a block it starts inside and closes one it
    ends inside, so query output is never quoted as a sentence nor the next sentence as code."""
    from core.index.chunks import readable
    from core.index.store import chroma_client, open_collection
    from rag.units import split_units

    docs = tmp_path / "listing"
    docs.mkdir()
    rows = "\n".join(f" Top.Science.Branch_{i} | {i * 7} | leaf node {i}" for i in range(400))
    (docs / "example.md").write_text(
        "# Example\n\nThe query lists every branch under Top.Science:\n\n"
        f"```\nSELECT path, id, note FROM test WHERE path <@ 'Top.Science';\n{rows}\n"
        "(400 rows)\n```\n\nWe could simplify this by creating a function that inserts a label.\n"
    )
    col = open_collection(chroma_client(embedded_settings), "listing", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[docs], progress=False)
    chunks = sorted(all_chunks(col), key=lambda c: int(c[1]["chunk_index"]))
    assert len(chunks) >= 3  # the listing spans several chunks

    def fences(text: str) -> int:
        return sum(line.strip().startswith("```") for line in text.splitlines())

    assert any(fences(text) % 2 for text, _ in chunks)  # embedded as cut
    for n, (text, meta) in enumerate(chunks):
        mended = readable(text, meta)
        assert fences(mended) % 2 == 0, mended[-200:]
        assert bool(meta.get("code_open")) == (n > 0)
        for unit in split_units(mended):
            assert unit.code == ("Branch_" in unit.text or "SELECT" in unit.text), unit
    last = readable(*chunks[-1])
    assert any(u.text.startswith("We could simplify") and not u.code for u in split_units(last))
    # What the answerer and the source cards get from retrieval is the mended text.
    nodes = make_retriever(embedded_settings, col, embed_model).retrieve("Top.Science.Branch_399")
    assert nodes and all(fences(n.node.get_content()) % 2 == 0 for n in nodes)
    assert any(n.node.metadata.get("code_open") for n in nodes)


def test_chunk_size_beyond_the_window_is_clamped_with_a_warning(embedded_settings, embed_model):
    from ingest.chunking import plan_chunks

    embedded_settings.chunking.size = 1024
    plan = plan_chunks(embedded_settings.chunking, embed_model)
    assert plan.size == plan.window == 510
    assert "1024 is larger than the 510 tokens" in plan.warning


def test_exact_name_ranks_its_chunk_first_with_hybrid(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection

    docs = tmp_path / "params"
    docs.mkdir()
    filler = [
        ("memory", "Memory settings decide how much RAM the server uses for caches and sorting."),
        ("disk", "Disk settings decide where files live and how often data is flushed to disk."),
        ("network", "Network settings decide which addresses the server listens on and ports."),
        ("logging", "Logging settings decide what the server writes to its log and how often."),
        ("limits", "Limit settings cap how long statements and idle sessions may run."),
    ]
    for name, text in filler:
        (docs / f"{name}.md").write_text(f"# {name.title()} settings\n\n{text}\n")
    (docs / "misc.md").write_text(
        "# Miscellaneous settings\n\nThe server has many settings. Among them, "
        "wal_spill_threshold_kb sets the size at which buffered records go to a temporary file.\n"
    )
    col = open_collection(chroma_client(embedded_settings), "params", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[docs], progress=False)
    hybrid = make_retriever(embedded_settings, col, embed_model)
    found = ask(hybrid, embed_model, "wal_spill_threshold_kb")
    assert found[0].metadata["file_name"] == "misc.md"
    assert found[0].rare
    # The source card is told so (it reads "keyword match", whatever the similarity).
    from llama_index.core.schema import QueryBundle

    from rag.retriever import to_source

    nodes = hybrid.retrieve(QueryBundle("wal_spill_threshold_kb"))
    assert to_source(nodes[0]).rare_words and not to_source(nodes[-1]).rare_words
    # Dense only is still there and answers from Chroma alone.
    dense = make_retriever(embedded_settings, col, embed_model, hybrid=False)
    assert dense.lexical is None
    assert (
        ask(dense, embed_model, "How much RAM is used for caches?")[0].metadata["file_name"]
        == "memory.md"
    )


def test_one_source_takes_at_most_its_share_of_the_results(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection

    docs = tmp_path / "dup"
    docs.mkdir()
    (docs / "long.txt").write_text(
        "\n\n".join(
            f"Harbour fees for boats of class {i} are paid at the harbour office."
            for i in range(200)
        )
    )
    (docs / "other.txt").write_text("Harbour fees can also be paid online through the city portal.")
    col = open_collection(chroma_client(embedded_settings), "dup", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[docs], progress=False)
    assert col.count() > 4
    found = ask(make_retriever(embedded_settings, col, embed_model), embed_model, "harbour fees")
    names = [c.metadata["file_name"] for c in found]
    assert names.count("long.txt") == 2 and "other.txt" in names
    uncapped = make_retriever(embedded_settings, col, embed_model, max_per_source=None)
    assert len(ask(uncapped, embed_model, "harbour fees")) == 4


def _in_step(settings, collection) -> None:
    index = load_lexical(lexical_dir(settings.data_dir, collection))
    assert index is not None
    assert index.stamp == current_stamp(collection)
    assert sorted(index.ids) == sorted(collection.get(include=[])["ids"])


def test_lexical_index_stays_in_step_through_change_prune_and_crash(
    settings, collection, embed_model, tmp_path, monkeypatch
):
    """On embedded Chroma and on a `chroma run` server (the `settings` fixture runs both)."""
    corpus = make_corpus(tmp_path / "corpus")

    def run(**kw):
        return ingest_paths(settings, collection, embed_model, paths=[corpus], progress=False, **kw)

    run()
    _in_step(settings, collection)
    retriever = make_retriever(settings, collection, embed_model)
    assert ask(retriever, embed_model, "lemon cake eggs")[0].metadata["file_name"] == "page.html"

    # Change: a file's new words are found lexically, its old ones are gone.
    (corpus / "plain.txt").write_text("The spare key now hangs under the zanzibarite stone.\n")
    report = run()
    assert report.changed == 1 and report.lexical_rebuilt
    _in_step(settings, collection)
    hits = retriever.lexical.get().search("zanzibarite", 5)
    assert hits and hits[0].rare
    old = retriever.lexical.get().search("blue door", 5)
    assert all("blue door" not in collection.get(ids=[h.chunk_id])["documents"][0] for h in old)

    # Prune: a deleted file leaves both indexes.
    (corpus / "notes.md").unlink()
    report = run(prune=True)
    assert report.pruned == 1
    _in_step(settings, collection)

    # Crash between the Chroma write and the lexical write: the next run (or the app) repairs it.
    (corpus / "page.html").write_text("<p>The lemon cake now needs a quindecillion of eggs.</p>")

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("core.index.lexical.build_lexical", die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.undo()
    stale = load_lexical(lexical_dir(settings.data_dir, collection))
    assert stale.stamp != current_stamp(collection)
    # A re-run with nothing to embed still repairs the lexical side.
    report = run()
    assert report.unchanged == report.seen and report.lexical_rebuilt
    _in_step(settings, collection)
    assert (
        ask(make_retriever(settings, collection, embed_model), embed_model, "quindecillion")[
            0
        ].metadata["file_name"]
        == "page.html"
    )


def test_missing_lexical_index_is_rebuilt_from_chroma(
    embedded_settings, embed_model, embed_id, tmp_path
):

    from core.index.store import chroma_client, open_collection

    corpus = make_corpus(tmp_path / "corpus")
    col = open_collection(chroma_client(embedded_settings), "rebuild", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[corpus], progress=False)
    shutil.rmtree(lexical_dir(embedded_settings.data_dir, col))
    retriever = make_retriever(embedded_settings, col, embed_model)
    found = ask(retriever, embed_model, "guest wifi password")
    assert found[0].metadata["file_name"] == "faq.jsonl"
    _in_step(embedded_settings, col)


def test_chunks_from_an_older_splitter_are_reembedded_once_with_a_note(
    embedded_settings, embed_model, embed_id, tmp_path
):
    from core.index.store import chroma_client, open_collection
    from ingest.pipeline import outdated_files, read_state

    corpus = make_corpus(tmp_path / "corpus")
    col = open_collection(chroma_client(embedded_settings), "upgrade", embed_id)
    ingest_paths(embedded_settings, col, embed_model, paths=[corpus], progress=False)
    # Make the collection look as an older ingest left it.
    got = col.get(include=["metadatas"])
    metas = []
    for meta in got["metadatas"]:
        meta = dict(meta)
        meta["splitter_version"] = None  # None deletes the key in Chroma's update
        meta["ingest_key"] = "old-" + meta["ingest_key"]
        metas.append(meta)
    col.update(ids=got["ids"], metadatas=metas)
    # What the app re-embeds at start: the outdated files that still exist.
    assert {p.name for p in outdated_files(col)} == {m["file_name"] for m in got["metadatas"]}
    report = ingest_paths(embedded_settings, col, embed_model, paths=[corpus], progress=False)
    assert report.changed == report.seen - len(report.failed)
    assert any("chunked by an older version of ingest" in n for n in report.notes)
    from ingest.pipeline import SPLITTER_VERSION

    assert all(s.splitters == {SPLITTER_VERSION} for s in read_state(col).values())
    again = ingest_paths(embedded_settings, col, embed_model, paths=[corpus], progress=False)
    assert again.chunks_written == 0 and not again.notes
    assert outdated_files(col) == []


COPY_PAGE = [
    ("Loading files", "COPY FROM reads rows from a file into a table, far faster than INSERT."),
    ("File formats", "The FORMAT option chooses text, csv or binary input for the rows loaded."),
    ("Header lines", "With HEADER the first line of the input file holds names and is skipped."),
    ("Delimiters", "DELIMITER sets the character that separates the columns of each row."),
    ("Errors while loading", "A malformed row stops the load and the table keeps none of it."),
]
LOGGING_PAGE = [
    ("Where logs go", "log_destination chooses stderr, syslog or the event log for messages."),
    ("Log rotation", "log_rotation_age starts a new log file after the given number of minutes."),
    ("Log line prefix", "log_line_prefix adds the time, the user and the database to each line."),
    ("Slow statements", "log_min_duration_statement logs every statement slower than this."),
    (
        "CSV output",
        "How to load a CSV file into a table: write the log with csvlog, then load the CSV file "
        "into a table.",
    ),
    ("Connections", "log_connections writes a line for every client that connects."),
    ("Checkpoints", "log_checkpoints reports each checkpoint with the number of buffers written."),
    ("Lock waits", "log_lock_waits reports sessions that wait longer than deadlock_timeout."),
]


def _write_pages(docs: Path, copy_page: list[tuple[str, str]]) -> None:
    for name, title, sections in (
        ("copy.md", "Loading data with COPY", copy_page),
        ("logging.md", "Logging settings", LOGGING_PAGE),
    ):
        body = "\n\n".join(f"## {head}\n\n{text}" for head, text in sections)
        (docs / name).write_text(f"# {title}\n\n{body}\n")


def _ingest_pages(embedded_settings, embed_model, embed_id, tmp_path):
    """The COPY and logging pages ingested in small chunks (several passages a page): the
    settings, the pages' folder and the collection."""
    from core.index.store import chroma_client, open_collection
    from core.settings import ChunkingSettings

    settings = embedded_settings.model_copy(update={"chunking": ChunkingSettings(size=48)})
    docs = tmp_path / "manual"
    docs.mkdir()
    _write_pages(docs, COPY_PAGE)
    col = open_collection(chroma_client(settings), "manual", embed_id)
    ingest_paths(settings, col, embed_model, paths=[docs], progress=False)
    return settings, docs, col


def test_a_page_about_the_topic_ranks_above_one_that_mentions_it_once(
    embedded_settings, embed_model, embed_id, tmp_path
):
    """Each passage's rank also counts its whole source's similarity to the question (the mean of
    the source's passage vectors), kept per build so a changed page is never scored stale."""
    import numpy as np

    from rag.retriever import SourceVectors

    settings, docs, col = _ingest_pages(embedded_settings, embed_model, embed_id, tmp_path)
    question = "How do I load a CSV file into a table?"
    # Ranked by passages alone, the logging page's one sentence on loading CSV files comes first.
    by_passage = make_retriever(settings, col, embed_model, source_weight=0.0, source_bonus=0.0)
    assert ask(by_passage, embed_model, question)[0].metadata["file_name"] == "logging.md"
    whole = make_retriever(settings, col, embed_model, source_bonus=0.0)
    assert whole.settings.source_weight == 0.3  # the default
    found = ask(whole, embed_model, question)
    assert found[0].metadata["file_name"] == "copy.md"
    assert "logging.md" in [c.metadata["file_name"] for c in found]  # reordered, not dropped

    # The COPY page changes: its new build is read whole (no stale sum from the old build).
    _write_pages(docs, [*COPY_PAGE[:2], ("Binary input", "Binary files load fastest of all.")])
    ingest_paths(settings, col, embed_model, paths=[docs], progress=False)
    ask(whole, embed_model, question)
    stored = col.get(where={"file_name": "copy.md"}, include=["embeddings", "metadatas"])
    meta = stored["metadatas"][0]
    build = (meta["source_key"], meta["ingest_key"])
    assert len({m["ingest_key"] for m in stored["metadatas"]}) == 1
    expected = np.sum(np.asarray(stored["embeddings"], np.float32), axis=0)
    assert np.allclose(whole.source_vectors.sums({build: meta["n_chunks"]})[build], expected)

    # A build read while incomplete (an ingest killed between writes) is used, never kept.
    vectors = SourceVectors(col)
    col.delete(ids=[stored["ids"][0]])
    partial = vectors.sums({build: meta["n_chunks"]})[build]
    assert np.allclose(partial, expected - np.asarray(stored["embeddings"][0], np.float32))
    assert build not in vectors._sums
    ingest_paths(settings, col, embed_model, paths=[docs], progress=False)  # repaired
    assert np.allclose(vectors.sums({build: meta["n_chunks"]})[build], expected)
    assert build in vectors._sums


def test_whole_sources_are_mixed_only_when_every_candidate_can_be_read_whole(
    embedded_settings, embed_model, embed_id, tmp_path
):
    """A passage written by another tool (no build metadata) cannot be read with its source, so
    no passage's score is mixed for that question: all stay on the same scale."""
    settings, _, col = _ingest_pages(embedded_settings, embed_model, embed_id, tmp_path)
    retriever = make_retriever(settings, col, embed_model, similarity_cutoff=None)
    question = "How do I load a CSV file into a table?"
    assert any(c.dense != c.cosine for c in ask(retriever, embed_model, question, k=8))

    text = "Tables can be loaded from CSV files with the import wizard."
    col.add(
        ids=["foreign-1"],
        documents=[text],
        embeddings=embed_model.get_text_embedding_batch([text]),
        metadatas=[{"source": "wizard.txt"}],
    )
    found = ask(retriever, embed_model, question, k=8)
    assert "foreign-1" in [c.chunk_id for c in found]
    assert all(c.dense == c.cosine for c in found)


FERRY_RECORDS = [
    "The ferry to Kessel Island leaves the north pier every morning at seven thirty.",
    # One record long enough to be cut into two passages, both about the ferry leaving, neither
    # saying when it leaves in the morning.
    "In summer the ferry to Kessel Island leaves the north pier more often, and on holidays an "
    "extra boat is added in the morning. Tickets for the ferry are sold on board, in cash or by "
    "card, and children under twelve travel free. Bicycles and dogs are welcome on the ferry at no "
    "extra charge. In winter the ferry to Kessel Island leaves less often, and in storms it may "
    "not leave at all: the harbour office then posts a notice on the pier. The crossing takes "
    "about forty minutes, and the ferry's cafe serves coffee and cakes on the way.",
    "The library on Kessel Island opens on weekday afternoons.",
    "Fishing boats unload their catch at the south harbour before dawn.",
    "The island's lighthouse was built in 1871 and can be visited in summer.",
    "The town hall is closed on public holidays.",
    "Parking near the station costs two euros an hour.",
]


def test_a_record_cut_into_more_passages_does_not_outrank_a_better_one_for_its_length(
    embedded_settings, embed_model, embed_id, tmp_path
):
    """Ranking sources by their best passage plus a share of their next best one must not turn
    into a prize for length: a short record that answers the question stays first above a longer
    record about the same topic that the splitter cut in two (its second passage continues the
    first, so it is not counted), whatever the share."""
    import json

    from core.index.store import chroma_client, open_collection
    from core.settings import ChunkingSettings, RetrievalSettings
    from ingest import RecordFields

    settings = embedded_settings.model_copy(update={"chunking": ChunkingSettings(size=64)})
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(FERRY_RECORDS))
    )
    col = open_collection(chroma_client(settings), "records", embed_id)
    ingest_paths(
        settings,
        col,
        embed_model,
        datasets=[str(records)],
        fields=RecordFields("text", ["id"]),
        progress=False,
    )
    n_chunks = {m["id"]: m["n_chunks"] for _, m in all_chunks(col)}
    assert n_chunks[0] == 1 and n_chunks[1] == 2
    question = "What time does the ferry to Kessel Island leave in the morning?"

    # Were its second passage counted at the full share, the long record would come first.
    found = ask(
        make_retriever(settings, col, embed_model, source_bonus=1.0, similarity_cutoff=None),
        embed_model,
        question,
        k=8,
    )
    fused = {(c.metadata["id"], c.metadata["chunk_index"]): c.fused for c in found}
    second, best = sorted([fused[(1, 0)], fused[(1, 1)]])
    assert best + second > fused[(0, 0)] > best
    # It continues the first passage, so it is not counted: the record that answers stays first.
    assert found[0].metadata["id"] == 0
    default = make_retriever(
        settings, col, embed_model, source_bonus=RetrievalSettings().source_bonus
    )  # the code's default, whatever the environment says
    assert ask(default, embed_model, question)[0].metadata["id"] == 0


def test_a_run_of_neighbouring_passages_of_one_section_counts_once():
    """A source's further passages add to its rank only when they are not part of a run of
    neighbouring passages of the same section already seen; a passage without a chunk index
    (another tool's) is counted."""
    from rag.retriever import _Candidate, _separate

    def at(index, section="A"):
        meta = {} if index is None else {"chunk_index": index, "heading_path": section}
        return _Candidate(f"c{index}{section}", "text", meta)

    # best first: 3; 4 and 2 continue it; 5 continues 4 (a run of four); 9 is apart; 10 is next
    # to 9 but in another section; 8 continues 9; an index read from text still counts.
    group = [at(3), at(4), at(2), at(5), at(9), at(None), at(10, "B"), at(8), at("0")]
    kept = [(c.metadata.get("chunk_index"), c.metadata.get("heading_path")) for c in group]
    assert [kept[i] for i, c in enumerate(group) if c in _separate(group)] == [
        (3, "A"),
        (9, "A"),
        (None, None),
        (10, "B"),
        ("0", "A"),
    ]


def test_collections_search_widely_and_an_older_one_is_widened_on_open(embedded_settings, embed_id):
    """Chroma's default search breadth (ef_search 100) misses some true nearest chunks, and which
    ones changes from one process to the next; every collection the app opens searches at
    SEARCH_EF, one made before that included, so its nearest chunks are the exact ones."""
    import numpy as np

    from core.index.store import SEARCH_EF, chroma_client, open_collection

    client = chroma_client(embedded_settings)
    fresh = open_collection(client, "fresh", embed_id)
    assert fresh.configuration["hnsw"]["ef_search"] == SEARCH_EF

    older = client.create_collection(
        "older",
        metadata={"embed_model": embed_id},
        configuration={"hnsw": {"space": "cosine"}},
        embedding_function=None,
    )
    assert older.configuration["hnsw"]["ef_search"] < SEARCH_EF
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    older.add(ids=[str(i) for i in range(len(vectors))], embeddings=vectors.tolist())

    # The search runs after a restart, as the app's does: this process loaded the graph while
    # adding, at the breadth of the time, and Chroma reads the breadth when it loads the graph.
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    child = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from core.index.store import chroma_client, open_collection\n"
        "from core.settings import Settings\n"
        "data, embed_id, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "col = open_collection(chroma_client(Settings(data_dir=Path(data))), 'older', embed_id)\n"
        "found = col.query(query_embeddings=queries, n_results=30, include=[])\n"
        "print(json.dumps([col.configuration['hnsw']['ef_search'], found['ids']]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(embedded_settings.data_dir), embed_id,
         json.dumps(queries.tolist())],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    ef, found = json.loads(done.stdout.strip().splitlines()[-1])
    assert ef == SEARCH_EF
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for q, ids in zip(queries, found, strict=True):
        exact = set(np.argsort(-(unit @ (q / np.linalg.norm(q))))[:30].astype(str))
        assert set(ids) == exact
