"""Speed on a 2-core CPU, in one invocation: each embedding backend against torch (throughput,
single-query latency, retrieval quality), ingest of the two 10-K PDFs against plain LlamaIndex,
and 20 chat sessions against the launched app on the default backend.

    .venv/bin/python bench/speed.py [--rounds 3] [--sessions 20] [--questions 10] [--skip-load]

1. On `../shared/data/finetune-embedding/val_dataset.json` (395 chunks, 790 questions), rounds
   interleave the backends so that each sees the same machine: chunks/s embedding the corpus and
   single-query p50/p95 ms; then hit@5 / MRR@10 of each, retrieving over that corpus. Exports are
   made once into a temporary folder (their time is printed, not counted).
2. bench/ingest_speed.py's comparison on the PDFs, our ingest on the default backend.
3. bench/chat.py's load test (sessions x questions through /respond) on a fresh data directory,
   which the app fills with its bundled docs on the default backend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
stay_offline()

DATA = ROOT.parent / "shared" / "data" / "finetune-embedding"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def retrieval_quality(model, queries: dict, corpus: dict, relevant: dict) -> tuple[float, float]:
    """hit@5 and MRR@10 retrieving each question over the corpus by cosine similarity."""
    import numpy as np

    ids = list(corpus)
    docs = np.asarray(model.get_text_embedding_batch([corpus[i] for i in ids]), np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    qids = list(queries)
    qs = np.asarray(model.get_text_embedding_batch([queries[q] for q in qids]), np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    top = np.argsort(-(qs @ docs.T), axis=1)[:, :10]
    hit5, rr = 0, []
    for row, q in zip(top, qids, strict=True):
        ranked = [ids[i] for i in row]
        wanted = set(relevant[q])
        rank = next((k for k, d in enumerate(ranked, 1) if d in wanted), None)
        hit5 += rank is not None and rank <= 5
        rr.append(1 / rank if rank else 0.0)
    return hit5 / len(qids), statistics.fmean(rr)


def backends(rounds: int) -> dict[str, dict[str, float]]:
    from core.embedding.providers import BACKENDS, build_embedding
    from core.settings import EmbeddingSettings

    val = json.loads((DATA / "val_dataset.json").read_text())
    chunks = list(val["corpus"].values())
    questions = list(val["queries"].values())
    figures: dict[str, dict[str, list[float] | float]] = {}
    models = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in BACKENDS:
            t0 = time.perf_counter()
            models[name] = build_embedding(
                EmbeddingSettings(backend=name), cache_dir=Path(cache) / "models"
            )
            models[name].get_text_embedding_batch(["warm up"] * 4)
            figures[name] = {"load_s": time.perf_counter() - t0, "rate": [], "lat": []}
            print(f"{name}: loaded, export included, in {time.perf_counter() - t0:.1f} s")
        for r in range(rounds):
            for name in BACKENDS:
                model = models[name]
                t0 = time.perf_counter()
                model.get_text_embedding_batch(chunks)
                figures[name]["rate"].append(len(chunks) / (time.perf_counter() - t0))
                for q in questions[r * 60 : (r + 1) * 60]:
                    t0 = time.perf_counter()
                    model.get_query_embedding(q)
                    figures[name]["lat"].append((time.perf_counter() - t0) * 1000)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{n} {figures[n]['rate'][-1]:.1f} chunks/s" for n in BACKENDS),
                flush=True,
            )
        out = {}
        for name in BACKENDS:
            hit5, mrr = retrieval_quality(
                models[name], val["queries"], val["corpus"], val["relevant_docs"]
            )
            f = figures[name]
            out[name] = {
                "chunks_s": statistics.median(f["rate"]),
                "p50_ms": statistics.median(f["lat"]),
                "p95_ms": pct(f["lat"], 0.95),
                "hit5": hit5,
                "mrr10": mrr,
                "load_s": f["load_s"],
            }
    return out


def ingest_ratio() -> tuple[float, float, float]:
    """(ours chunks/s on the default backend, plain LlamaIndex chunks/s with torch, ratio)."""
    from ingest_speed import plain_llamaindex

    from core.embedding.providers import DEFAULT_BACKEND, build_embedding, embedding_id
    from core.index.store import chroma_client, open_collection
    from core.settings import EmbeddingSettings, Settings
    from ingest import ingest_paths
    from ingest.chunking import plan_chunks

    pdfs = sorted(DATA.glob("*.pdf"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        torch_model = build_embedding(EmbeddingSettings(backend="torch"))
        ours_model = build_embedding(settings.embedding, cache_dir=Path(tmp) / "models")
        for m in (torch_model, ours_model):
            m.get_text_embedding_batch(["warm up the model"] * 8)
        client = chroma_client(settings)
        plan = plan_chunks(settings.chunking, torch_model)
        _, base_chunks, base_s = plain_llamaindex(pdfs, client, torch_model, plan)
        base_rate = base_chunks / base_s
        col = open_collection(client, "ours", embedding_id(settings.embedding))
        report = ingest_paths(settings, col, ours_model, paths=pdfs, progress=False)
        ours_rate = report.chunks_written / report.seconds
    print(
        f"ingest: ours ({DEFAULT_BACKEND}) {ours_rate:.1f} chunks/s, "
        f"plain LlamaIndex (torch) {base_rate:.1f} chunks/s",
        flush=True,
    )
    return ours_rate, base_rate, ours_rate / base_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--skip-load", action="store_true", help="no load test")
    parser.add_argument("--skip-ingest", action="store_true", help="no ingest comparison")
    args = parser.parse_args()
    if not (DATA / "val_dataset.json").exists():
        print(f"missing {DATA}/val_dataset.json", file=sys.stderr)
        return 2
    from core.embedding.providers import DEFAULT_BACKEND

    figures = backends(args.rounds)
    base = figures["torch"]
    print(f"{'backend':10s} chunks/s  x torch  p50 ms  p95 ms  hit@5   d     MRR@10  d")
    for name, f in figures.items():
        print(
            f"{name:10s} {f['chunks_s']:8.1f} {f['chunks_s'] / base['chunks_s']:7.2f}x "
            f"{f['p50_ms']:7.1f} {f['p95_ms']:7.1f}  "
            f"{f['hit5']:.3f} {f['hit5'] - base['hit5']:+.3f}  "
            f"{f['mrr10']:.3f} {f['mrr10'] - base['mrr10']:+.3f}"
        )
    fit = [n for n, f in figures.items() if f["hit5"] >= base["hit5"] - 0.01 - 1e-9]
    fastest = max(fit, key=lambda n: figures[n]["chunks_s"])
    print(f"fastest within 0.01 hit@5 of torch: {fastest} (the default is {DEFAULT_BACKEND})")
    chosen = figures[DEFAULT_BACKEND]
    ratio = float("nan")
    if not args.skip_ingest and list(DATA.glob("*.pdf")):
        _, _, ratio = ingest_ratio()
    load = {"p95_ms": float("nan"), "errors": -1, "lost": -1}
    if not args.skip_load:
        from chat import load_test

        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            load = load_test(data_dir, args.sessions, args.questions)
        print(
            f"load: {args.sessions} sessions x {args.questions} questions: "
            f"p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms, "
            f"{load['errors']} errors, {load['lost']} lost turns, wall {load['wall_s']:.1f} s"
            + (f" ({load['first_error']})" if load["errors"] else "")
        )
    print(
        f"embed_speedup={chosen['chunks_s'] / base['chunks_s']:.2f} "
        f"hit5_delta={chosen['hit5'] - base['hit5']:+.3f} "
        f"load_p95_s={load['p95_ms'] / 1000:.2f} errors={load['errors']} "
        f"lost_turns={load['lost']} ingest_ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
