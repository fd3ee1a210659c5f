"""Page-level retrieval quality on a real manual against a plain LlamaIndex baseline built in the
same run, plus gold-passage hit@1 on SciQ and passage hit@1 on 10-K passages ingested as short
records (see filings_hit1). Installs nothing: it says what to install when the manual is missing.

    .venv/bin/python bench/retrieval.py [--manual DIR] [--questions FILE] [--no-sciq]
        [--no-filings] [--variants]

Ours: our ingest (main-content HTML, heading paths, model-sized chunks, lexical index) into a
temporary data directory, questions asked through the app's retriever; `dense_recall30` is the
share of each question's exact 30 nearest chunks that Chroma's search returns
(`base_dense_recall30` at Chroma's default search breadth, in the same run). Baseline:
`VectorStoreIndex.from_documents` over BeautifulSoup `get_text()` of each page, SentenceSplitter
1024/200, the same embedding model. Chunks are deduplicated into pages in rank order.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHARED = ROOT.parent / "shared" / "data"
MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")


def page_metrics(ranked_pages: list[list[str]], gold: list[set[str]]) -> dict[str, float]:
    """hit@1/5/10 and MRR@10 of page rankings against gold page sets."""
    hits = {1: 0, 5: 0, 10: 0}
    rr = []
    for pages, wanted in zip(ranked_pages, gold, strict=True):
        rank = next((i for i, p in enumerate(pages[:10], start=1) if p in wanted), None)
        for k in hits:
            hits[k] += rank is not None and rank <= k
        rr.append(1.0 / rank if rank else 0.0)
    n = len(gold)
    return {
        "hit1": hits[1] / n,
        "hit5": hits[5] / n,
        "hit10": hits[10] / n,
        "mrr10": statistics.fmean(rr),
    }


def dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def run_baseline(files: list[Path], questions: list[str], embed) -> tuple[list[list[str]], float]:
    from bs4 import BeautifulSoup
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    started = time.perf_counter()
    docs = []
    for f in files:
        text = BeautifulSoup(f.read_text(errors="replace"), "html.parser").get_text()
        if text.strip():
            docs.append(Document(text=text, metadata={"file_name": f.name}))
    index = VectorStoreIndex.from_documents(
        docs,
        embed_model=embed,
        transformations=[SentenceSplitter(chunk_size=1024, chunk_overlap=200)],
    )
    seconds = time.perf_counter() - started
    retriever = index.as_retriever(similarity_top_k=40)
    ranked = []
    for q in questions:
        nodes = retriever.retrieve(q)
        ranked.append(dedupe([n.node.metadata["file_name"] for n in nodes]))
    return ranked, seconds


def ask_ours(retriever, embed, questions: list[str]) -> list[list[str]]:
    """Pages in the order the app ranks them: the app's own candidate pool, its ranking cut at
    the pool's size instead of `top_k` (a deeper cut would also widen the pool, which changes
    the ranking at the top)."""
    ranked = []
    depth = retriever.settings.candidates
    for q in questions:
        emb = embed.get_query_embedding(q)
        found = retriever.ranked(q, emb, k=depth)
        ranked.append(dedupe([str(c.metadata.get("file_name")) for c in found]))
    return ranked


def variants(base):
    """Retrieval settings compared on the same index (--variants)."""
    yield "dense only", base.model_copy(update={"hybrid": False})
    yield "no source similarity", base.model_copy(update={"source_weight": 0.0})
    for bonus in (0.0, 0.5):
        yield f"source bonus {bonus}", base.model_copy(update={"source_bonus": bonus})
    yield "hybrid rrf", base.model_copy(update={"fusion": "rrf"})
    for w in (0.3, 0.5):
        yield (
            f"hybrid weighted {w}",
            base.model_copy(update={"fusion": "weighted", "lexical_weight": w}),
        )


def dense_recall(col, embed, questions: list[str], k: int = 30) -> float:
    """The share of each question's exact `k` nearest chunks (cosine over every stored vector)
    that the collection's HNSW search returns: the dense side's candidate pool as it should be."""
    import numpy as np

    got = col.get(include=["embeddings"])
    ids = np.asarray(got["ids"])
    unit = np.asarray(got["embeddings"], np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    found = 0
    for q in questions:
        e = np.asarray(embed.get_query_embedding(q), np.float32)
        exact = set(ids[np.argsort(-(unit @ (e / np.linalg.norm(e))), kind="stable")[:k]])
        res = col.query(query_embeddings=[e.tolist()], n_results=k, include=[])
        found += len(exact & set(res["ids"][0]))
    return found / (k * len(questions))


def recall_of(data_dir: Path, questions: list[str], ef: int) -> float:
    """dense_recall of the manual's collection in `data_dir` searched at breadth `ef`, read by
    this process as a restarted app reads it (the breadth is read when the search first loads the
    index, so each breadth needs a process of its own)."""
    from core.embedding.providers import build_embedding
    from core.index.store import chroma_client
    from core.settings import Settings

    settings = Settings(data_dir=data_dir)
    embed = build_embedding(settings.embedding, cache_dir=data_dir / "models")
    col = chroma_client(settings).get_collection("manual", embedding_function=None)
    col.modify(configuration={"hnsw": {"ef_search": ef}})
    return dense_recall(col, embed, questions)


def recall_after_restart(data_dir: Path, questions: Path, ef: int) -> float:
    """recall_of in a fresh process."""
    command = [sys.executable, __file__, "--recall-of", str(data_dir), "--ef", str(ef)]
    done = subprocess.run([*command, "--questions", str(questions)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measuring dense recall at ef_search {ef} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.splitlines()[-1])


def retrievers_on(settings, embed, col):
    """A function making the app's retriever on `col` for given retrieval settings; the
    retrievers share one lexical index and one cache of source vectors, as the app's do."""
    from core.index.lexical import LexicalSource, lexical_dir
    from rag.retriever import HybridRetriever, SourceVectors

    lexical = LexicalSource(col, lexical_dir(settings.data_dir, col))
    vectors = SourceVectors(col)
    return lambda retrieval: HybridRetriever(col, embed, retrieval, lexical, vectors)


def ingest_records(settings, embed, name: str, path: Path, fields):
    """Rows of a record file (CSV, JSONL) ingested into collection `name` with our ingest, as a
    user would; a function making retrievers on it (see retrievers_on)."""
    from core.embedding.providers import embedding_id
    from core.index.store import chroma_client, open_collection
    from ingest import ingest_paths

    col = open_collection(chroma_client(settings), name, embedding_id(settings.embedding))
    print(f"{name}: ingesting {path.name} ...", flush=True)
    report = ingest_paths(settings, col, embed, datasets=[str(path)], fields=fields, progress=False)
    print(f"{name}: {report.summary()}", flush=True)
    return retrievers_on(settings, embed, col)


def sciq_hit1(settings, embed, limit: int | None) -> float | None:
    """Gold-passage hit@1 on SciQ: the top passage is the question's own support."""
    from ingest import RecordFields

    path = SHARED / "sciq" / "validation.csv"
    if not path.exists():
        return None
    rows = list(csv.DictReader(path.open(encoding="utf-8")))[:limit]
    retriever = ingest_records(
        settings, embed, "sciq", path, RecordFields("support", ["question"])
    )(settings.retrieval)
    hits = 0
    for row in rows:
        found = retriever.ranked(row["question"], embed.get_query_embedding(row["question"]), k=1)
        hits += bool(found) and " ".join(found[0].text.split()) in " ".join(row["support"].split())
    return hits / len(rows)


def filings_hit1(settings, embed, variants_too: bool) -> dict[str, float] | None:
    """Passage-level hit@1 on a collection of short records: the held-out half of the 10-K
    embedding benchmark (`finetune-embedding/val_dataset.json`), each corpus passage ingested as
    a record of its own, each question about exactly one record. Source-level ranking must not
    favour a record for being cut into more passages than another. Keys: "default" and, with
    `variants_too`, the source bonus at 0 and at 0.5."""
    from ingest import RecordFields

    path = SHARED / "finetune-embedding" / "val_dataset.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    records = settings.data_dir / "filings.jsonl"
    with records.open("w", encoding="utf-8") as fh:
        for cid, text in data["corpus"].items():
            fh.write(json.dumps({"cid": cid, "text": text}) + "\n")
    retriever_for = ingest_records(
        settings, embed, "filings", records, RecordFields("text", ["cid"])
    )
    asked = [(q, data["relevant_docs"][qid][0]) for qid, q in data["queries"].items()]
    embeddings = [embed.get_query_embedding(q) for q, _ in asked]
    cases = {"default": settings.retrieval}
    if variants_too:
        for bonus in (0.0, 0.5):
            cases[f"source bonus {bonus}"] = settings.retrieval.model_copy(
                update={"source_bonus": bonus}
            )
    out = {}
    for name, rs in cases.items():
        retriever = retriever_for(rs)
        hits = 0
        for (q, gold), emb in zip(asked, embeddings, strict=True):
            found = retriever.ranked(q, emb, k=1)
            hits += bool(found) and found[0].metadata.get("cid") == gold
        out[name] = hits / len(asked)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual", type=Path, default=MANUAL)
    parser.add_argument("--questions", type=Path, default=SHARED / "pgdocs" / "questions.jsonl")
    parser.add_argument("--no-sciq", action="store_true", help="skip the SciQ check")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain baseline")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="compare retrieval settings too (fusion, source share)",
    )
    parser.add_argument("--sciq-limit", type=int, default=None)
    parser.add_argument("--no-filings", action="store_true", help="skip the 10-K records check")
    parser.add_argument("--recall-of", type=Path, help=argparse.SUPPRESS)  # see recall_of
    parser.add_argument("--ef", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recall_of is not None:
        items = [
            json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()
        ]
        print(recall_of(args.recall_of, [item["q"] for item in items], args.ef))
        return 0
    if not args.manual.is_dir():
        print(
            f"the manual is not at {args.manual}: install it with "
            "`apt-get install -y postgresql-doc-15`, or pass --manual DIR",
            file=sys.stderr,
        )
        return 2
    if not args.questions.exists():
        print(f"no question set at {args.questions}; pass --questions", file=sys.stderr)
        return 2
    items = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    questions = [item["q"] for item in items]
    gold = [set(item["gold"]) for item in items]
    files = sorted(args.manual.glob("*.html"))

    from core.embedding.providers import build_embedding, embedding_id
    from core.embedding.window import model_window, packaged_model_dir
    from core.index.store import SEARCH_EF, chroma_client, open_collection
    from core.settings import Settings
    from ingest import ingest_paths

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        embed = build_embedding(settings.embedding, cache_dir=Path(tmp) / "models")
        embed.get_text_embedding_batch(["warm up the model"] * 8)
        # Plain LlamaIndex runs the same model as shipped (its own 256-piece window) through
        # HuggingFaceEmbedding (torch); ours runs it on the product's default backend and window.
        shipped = model_window(packaged_model_dir())
        base_embed = build_embedding(
            settings.embedding.model_copy(update={"backend": "torch", "max_seq_length": shipped})
        )
        base_embed.get_text_embedding_batch(["warm up the model"] * 8)
        print(
            f"ours embeds with {embedding_id(settings.embedding)}, the baseline with torch at "
            f"{shipped} word pieces"
        )

        col = open_collection(chroma_client(settings), "manual", embedding_id(settings.embedding))
        report = ingest_paths(settings, col, embed, paths=[args.manual], progress=False)
        ours_s = report.seconds
        print(f"ours: {report.summary()}; {col.count()} chunks", flush=True)
        retriever_for = retrievers_on(settings, embed, col)
        ours = page_metrics(ask_ours(retriever_for(settings.retrieval), embed, questions), gold)
        print(f"ours ({settings.retrieval.fusion}): {_fmt(ours)}", flush=True)
        # In a fresh process, as the app reads the index after a restart (the search graph is
        # loaded from disk there; the one built during ingest finds everything).
        narrow = recall_after_restart(Path(tmp), args.questions, 100)  # Chroma's default
        recall = recall_after_restart(Path(tmp), args.questions, SEARCH_EF)
        print(
            f"dense search after a restart: {recall:.3f} of the exact 30 nearest chunks found at "
            f"ef_search {SEARCH_EF}, {narrow:.3f} at Chroma's default 100",
            flush=True,
        )
        if args.variants:
            for name, variant in variants(settings.retrieval):
                r = retriever_for(variant)
                scores = page_metrics(ask_ours(r, embed, questions), gold)
                print(f"  variant {name:<20} {_fmt(scores)}")
            for cap in (1, None):
                v = settings.retrieval.model_copy(update={"max_per_source": cap})
                r = retriever_for(v)
                scores = page_metrics(ask_ours(r, embed, questions), gold)
                print(f"  variant cap={cap!s:<16} {_fmt(scores)}")

        if args.no_baseline:
            base, base_s = {"hit1": 0.0, "hit5": 0.0, "hit10": 0.0, "mrr10": 0.0}, float("nan")
        else:
            ranked, base_s = run_baseline(files, questions, base_embed)
            base = page_metrics(ranked, gold)
            print(f"baseline: {_fmt(base)}; ingest {base_s:.1f}s", flush=True)
        print(f"ingest seconds: ours {ours_s:.1f}, baseline {base_s:.1f}")

        sciq = None if args.no_sciq else sciq_hit1(settings, embed, args.sciq_limit)
        if sciq is not None:
            print(f"sciq gold-passage hit@1: {sciq:.3f} (target: not below 0.80)")
        filings = None if args.no_filings else filings_hit1(settings, embed, args.variants)
        if filings is not None:
            print(
                "10-K records, passage hit@1: "
                + ", ".join(f"{name} {v:.3f}" for name, v in filings.items())
            )

    print(
        f"hit1={ours['hit1']:.3f} mrr10={ours['mrr10']:.3f} base_hit1={base['hit1']:.3f} "
        f"base_mrr10={base['mrr10']:.3f} hit5={ours['hit5']:.3f} base_hit5={base['hit5']:.3f} "
        f"ingest_ratio={ours_s / base_s:.2f} dense_recall30={recall:.3f} "
        f"base_dense_recall30={narrow:.3f}"
        + (f" sciq_hit1={sciq:.3f}" if sciq is not None else "")
        + (f" filings_hit1={filings['default']:.3f}" if filings is not None else "")
    )
    return 0


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in m.items())


if __name__ == "__main__":
    sys.exit(main())
