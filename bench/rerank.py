"""The reranker trained here, measured where its training never looked.

Held out: a reranker trained (as a job, through the service functions the CLI and the tab call)
on `train_dataset.json` only (Lyft 10-K questions and passages), from the packaged MiniLM's
weights; measured on the 790 `val_dataset.json` questions over their own corpus (Uber), each
passage a record in the app's collection, retrieval as the app does it, without and with it:
passage hit@1 and MRR@10. Corpus only: on the PostgreSQL manual, a reranker trained on pairs
drawn from the manual itself (headings and inverse cloze; no question of the retrieval set), page
hit@1 and MRR@10 on the 42 questions without and with it. Cost: the added time per question
(p50, p95) on this CPU, and the training time.

    .venv/bin/python bench/rerank.py [--data DIR] [--manual DIR] [--manual-data DIR]
        [--epochs 4] [--lr 3e-4] [--negatives 3] [--train-length 128] [--top-n 10]
        [--weight 0.5] [--no-manual] [--no-heldout] [--model DIR] [--manual-model DIR]
        [--limit-val N]

The last line holds the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from math import nan
from pathlib import Path

from core.offline import stay_offline

stay_offline()
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "finetune-embedding"
MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
QUESTIONS = ROOT.parent / "shared" / "data" / "pgdocs" / "questions.jsonl"
MODELS = Path(tempfile.gettempdir()) / "rag-chat-bench-models"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--manual", type=Path, default=MANUAL)
    p.add_argument("--questions", type=Path, default=QUESTIONS)
    p.add_argument("--manual-data", type=Path, help="keep the manual's index here (reused)")
    p.add_argument("--no-manual", action="store_true")
    p.add_argument("--no-heldout", action="store_true", help="the manual part only")
    p.add_argument(
        "--model", type=Path, help="held out: a reranker trained before, instead of training one"
    )
    p.add_argument(
        "--manual-model",
        type=Path,
        help="manual: a reranker trained before (for example the held-out one) instead of one "
        "trained on the manual's pairs; a diagnostic, not the corpus-only figure",
    )
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--train-length", type=int, default=128, help="word pieces in training")
    p.add_argument("--manual-pairs", type=int, default=1000, help="manual questions trained on")
    p.add_argument("--top-n", type=int, default=None, help="candidates re-scored (setting)")
    p.add_argument("--weight", type=float, default=None, help="share of its score (setting)")
    p.add_argument("--limit-val", type=int, help="first N held-out questions only")
    return p.parse_args()


def _context(data_dir: Path):
    from core.settings import Settings
    from finetune.context import FineTuneContext

    settings = Settings(data_dir=data_dir)
    settings.app.docs_dir = data_dir / "no-docs"
    settings.embedding.cache_dir = MODELS
    ctx = FineTuneContext.open(settings)
    ctx.registry.seed(settings)
    return ctx


def train(ctx, request_args: dict, label: str) -> tuple[dict, float]:
    """A reranker job on the context's stored pairs dataset `label`; (the registered version's
    reranker spec, training seconds)."""
    from finetune.rerank.job import RerankRequest, launch_reranker

    job = launch_reranker(ctx, RerankRequest(dataset_id=label, **request_args))
    for event in ctx.store.events(job.id):
        if event.step is None:
            print(f"  {event.message}", flush=True)
    if job.status != "succeeded":
        raise SystemExit(f"{label}: the training job {job.status}: {job.error}")
    version = ctx.registry.get(job.candidate_version_id)
    return version.spec["reranker"], float(version.provenance["train_seconds"])


def pipeline_of(settings):
    from rag.live import EmbeddingCache, build_pipeline
    from rag.prompt import system_prompt

    return build_pipeline(settings, None, None, None, system_prompt(settings), EmbeddingCache())


def ranks(pipeline, questions: list[str], key, reranking=None) -> tuple[list[list[str]], list]:
    """For each question the keys (`key(candidate)`) in the app's retrieval order, deduplicated,
    best first, and the seconds each retrieval took."""
    pipeline.retriever.reranking = reranking
    out, seconds = [], []
    for q in questions:
        emb = pipeline.embed_model.get_query_embedding(q)
        t0 = time.perf_counter()
        found = pipeline.retriever.ranked(q, emb, k=10)
        seconds.append(time.perf_counter() - t0)
        out.append(list(dict.fromkeys(key(c) for c in found)))
    return out, seconds


def metrics(ranked: list[list[str]], gold: list[set[str]]) -> dict[str, float]:
    hit1 = [bool(r) and r[0] in g for r, g in zip(ranked, gold, strict=True)]
    rr = []
    for r, g in zip(ranked, gold, strict=True):
        rr.append(next((1 / i for i, k in enumerate(r[:10], start=1) if k in g), 0.0))
    return {"hit1": statistics.fmean(hit1), "mrr10": statistics.fmean(rr)}


def reranking_of(spec: dict, settings, top_n, weight):
    """The reranker as the app serves the registered version (its spec over the settings)."""
    from rag.rerank import Reranking

    cfg = settings.reranker.model_validate(settings.reranker.model_dump() | spec)
    if top_n is not None:
        cfg.top_n = top_n
    if weight is not None:
        cfg.weight = weight
    return Reranking.from_settings(cfg, MODELS)


def held_out(args, work: Path) -> dict[str, float]:
    from finetune.embedding.service import PairsRequest, build_pairs
    from ingest import RecordFields, ingest_paths

    if args.model is not None:
        # A model this script trained before, read as its version would be (at the training
        # window): for trying serving settings without training again.
        spec, train_s = {"model_dir": str(args.model), "max_length": args.train_length}, nan
        print(f"held-out: the model in {args.model}, not trained in this run", flush=True)
    else:
        # Train on the Lyft questions only.
        ctx = _context(work / "train")
        files = [args.data / "train_dataset.json"]
        build_pairs(ctx, PairsRequest(name="lyft", files=files, negatives=0), progress=False)
        request = {
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "negatives": args.negatives,
            "max_length": args.train_length,
        }
        spec, train_s = train(ctx, request, "lyft")
        print(f"held-out: trained in {train_s:.0f} s -> {spec['model_dir']}", flush=True)

    # The Uber corpus in the app's collection, each passage a record; its 790 questions.
    val = json.loads((args.data / "val_dataset.json").read_text())
    settings = _context(work / "val").settings
    records = work / "uber.jsonl"
    with records.open("w", encoding="utf-8") as fh:
        for cid, text in val["corpus"].items():
            fh.write(json.dumps({"cid": cid, "text": text}) + "\n")
    pipeline = pipeline_of(settings)
    report = ingest_paths(
        settings,
        pipeline.collection,
        pipeline.embed_model,
        datasets=[str(records)],
        fields=RecordFields("text", ["cid"]),
        progress=False,
    )
    print(f"held-out corpus: {report.summary()}", flush=True)
    qids = list(val["queries"])[: args.limit_val]
    questions = [val["queries"][q] for q in qids]
    gold = [set(val["relevant_docs"][q]) for q in qids]

    def key(c) -> str:
        return str((c.metadata or {}).get("cid"))

    before, plain_s = ranks(pipeline, questions, key)
    reranking = reranking_of(spec, settings, args.top_n, args.weight)
    ranks(pipeline, questions[:3], key, reranking)  # load and export once, outside the timing
    after, rerank_s = ranks(pipeline, questions, key, reranking)
    base, ours = metrics(before, gold), metrics(after, gold)
    added = sorted(r - p for r, p in zip(rerank_s, plain_s, strict=True))
    p50, p95 = added[len(added) // 2], added[int(len(added) * 0.95)]
    print(
        f"held-out ({len(qids)} questions): hit@1 {base['hit1']:.3f} -> {ours['hit1']:.3f}, "
        f"MRR@10 {base['mrr10']:.3f} -> {ours['mrr10']:.3f} "
        f"({ours['mrr10'] - base['mrr10']:+.3f}; target +0.05); added per question "
        f"p50 {p50:.3f} s, p95 {p95:.3f} s (target p95 <= 0.5 s; top {reranking.top_n}, weight "
        f"{reranking.weight})",
        flush=True,
    )
    return {
        "val_mrr10": base["mrr10"],
        "val_mrr10_rerank": ours["mrr10"],
        "val_hit1": base["hit1"],
        "val_hit1_rerank": ours["hit1"],
        "p50_added_s": p50,
        "p95_added_s": p95,
        "train_s": train_s,
    }


def manual(args, work: Path) -> dict[str, float]:
    from finetune.embedding.service import PairsRequest, build_pairs
    from ingest import ingest_paths

    data_dir = args.manual_data or work / "manual"
    ctx = _context(data_dir)
    settings = ctx.settings
    pipeline = pipeline_of(settings)
    report = ingest_paths(settings, pipeline.collection, pipeline.embed_model, paths=[args.manual])
    print(f"manual: {report.summary()}", flush=True)
    if args.manual_model is not None:
        # A diagnostic: a reranker trained elsewhere (the held-out one: other questions, another
        # corpus), read at the training window, instead of one trained on the manual's pairs.
        spec, train_s = {"model_dir": str(args.manual_model), "max_length": args.train_length}, nan
        print(f"manual: the model in {args.manual_model}, not trained in this run", flush=True)
    else:
        # Pairs drawn from the manual itself: its headings and inverse cloze; no user question.
        name = f"manual-{int(time.time())}"
        request = PairsRequest(name=name, headings=True, cloze=True, negatives=0)
        print(build_pairs(ctx, request, progress=False).summary(), flush=True)
        spec, train_s = train(
            ctx,
            {
                "epochs": args.epochs,
                "learning_rate": args.lr,
                "negatives": args.negatives,
                "max_length": args.train_length,
                "limit": args.manual_pairs,
            },
            name,
        )
        print(f"manual: trained in {train_s:.0f} s", flush=True)
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    questions = [r["q"] for r in rows]
    gold = [set(r["gold"]) for r in rows]

    def key(c) -> str:
        return Path(str((c.metadata or {}).get("source", ""))).name

    before, _ = ranks(pipeline, questions, key)
    after, _ = ranks(
        pipeline, questions, key, reranking_of(spec, settings, args.top_n, args.weight)
    )
    base, ours = metrics(before, gold), metrics(after, gold)
    print(
        f"manual ({len(rows)} questions): page hit@1 {base['hit1']:.3f} -> {ours['hit1']:.3f} "
        f"(target: not below), MRR@10 {base['mrr10']:.3f} -> {ours['mrr10']:.3f}",
        flush=True,
    )
    return {
        "manual_hit1": base["hit1"],
        "manual_hit1_rerank": ours["hit1"],
        "manual_mrr10": base["mrr10"],
        "manual_mrr10_rerank": ours["mrr10"],
        "manual_train_s": train_s,
    }


def main() -> int:
    args = _args()
    if not (args.data / "train_dataset.json").is_file():
        print(f"missing {args.data}/train_dataset.json (see ../shared/data/SOURCES.md)")
        return 2
    from core.errors import ConfigError
    from rag.rerank import check_model_dir

    for given in (args.model, args.manual_model):
        try:
            if given is not None:
                check_model_dir(given)  # before an hour of work, not after it
        except ConfigError as exc:
            print(f"cannot read that reranker: {exc}")
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    figures = {} if args.no_heldout else held_out(args, work)
    if not args.no_manual:
        if args.manual.is_dir() and args.questions.is_file():
            figures |= manual(args, work)
        else:
            print(f"manual part left out: {args.manual} or {args.questions} is missing")
    keys = [
        "val_mrr10",
        "val_mrr10_rerank",
        "val_hit1",
        "val_hit1_rerank",
        "manual_hit1",
        "manual_hit1_rerank",
        "p95_added_s",
        "train_s",
    ]
    print(" ".join(f"{k}={figures.get(k, float('nan')):.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
