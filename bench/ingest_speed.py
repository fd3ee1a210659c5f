"""Ingest throughput against plain LlamaIndex, in one invocation, on the same PDFs, embedding model
and chunking. Prints chunks per second of each, their ratio, and the unchanged re-ingest speedup.

    .venv/bin/python bench/ingest_speed.py [--pdf-dir ../shared/data/finetune-embedding]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def plain_llamaindex(pdfs: list[Path], client, embed, plan) -> tuple[int, int, float]:
    """(pages, chunks, seconds) of `VectorStoreIndex.from_documents` over the PDFs' pages into a
    fresh Chroma collection: SentenceSplitter at `plan`'s size and overlap, the given model."""
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from ingest.loaders import load_sections

    t0 = time.perf_counter()
    documents = [
        Document(text=s.text, metadata={"file_name": pdf.name, **s.metadata})
        for pdf in pdfs
        for s in load_sections(pdf, pdf.read_bytes())
    ]
    col = client.get_or_create_collection(
        "baseline", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=col)
        ),
        embed_model=embed,
        transformations=[SentenceSplitter(chunk_size=plan.size, chunk_overlap=plan.overlap)],
    )
    return len(documents), col.count(), time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(__file__).resolve().parent.parent.parent / "shared/data/finetune-embedding"
    parser.add_argument("--pdf-dir", type=Path, default=default_dir)
    args = parser.parse_args()
    pdfs = sorted(args.pdf_dir.glob("*.pdf"))
    if not pdfs:
        print(f"no PDFs under {args.pdf_dir}; pass --pdf-dir", file=sys.stderr)
        return 2

    from core.embedding.providers import build_embedding, embedding_id
    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from ingest import ingest_paths
    from ingest.chunking import plan_chunks

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        embed = build_embedding(settings.embedding, cache_dir=Path(tmp) / "models")
        embed.get_text_embedding_batch(["warm up the model"] * 8)
        client = chroma_client(settings)

        # Baseline: plain LlamaIndex over the same pages, same model, chunks of the same size
        # (LlamaIndex counts them in its own tokenizer).
        plan = plan_chunks(settings.chunking, embed)
        pages, base_chunks, base_s = plain_llamaindex(pdfs, client, embed, plan)

        ours_col = open_collection(client, "ours", embedding_id(settings.embedding))
        first = ingest_paths(settings, ours_col, embed, paths=pdfs, progress=False)
        again = ingest_paths(settings, ours_col, embed, paths=pdfs, progress=False)

    base_rate = base_chunks / base_s
    ours_rate = first.chunks_written / first.seconds
    print(f"pages={pages} pdfs={len(pdfs)}")
    print(f"baseline: {base_chunks} chunks in {base_s:.1f}s = {base_rate:.1f} chunks/s")
    print(
        f"ours:     {first.chunks_written} chunks in {first.seconds:.1f}s = "
        f"{ours_rate:.1f} chunks/s"
    )
    print(f"re-ingest unchanged: {again.seconds:.2f}s, {again.chunks_written} chunks written")
    print(
        f"ingest_vs_baseline={ours_rate / base_rate:.2f} "
        f"reingest_speedup={first.seconds / again.seconds:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
