"""The admin's whole loop on real data, through the service functions the UI calls: the two 10-K
corpora of the embedding benchmark in one collection; the 668 `train_dataset.json` questions asked
through the app, each rated up when the right passage is among the answer's sources and down
otherwise (the only supervision: no held-out question and no LLM is used); an embedding candidate
built from the chat log, trained as a job, judged by the gate against the active model on the 790
held-out `val_dataset.json` questions with their gold passages, and promoted when it wins; then a
deliberately degraded candidate (a few steps on shuffled pairs) that the gate must reject.

    .venv/bin/python bench/loop.py [--data DIR] [--questions N] [--epochs 2] [--negatives 1]
        [--batch-size 32] [--loss gist] [--holdout 0] [--gold-pairs | --cloze]

Retrieval is the app's at its defaults, but with five passages an answer (`top_k` 5), so hit@5
is what it says; both sides of the gate read the same way. The last line holds the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from core.offline import stay_offline
from finetune.embedding.train import LOSSES

stay_offline()
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "finetune-embedding"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def found(sources, gold: str) -> bool:
    """Whether a passage of the answer's sources is (part of) the gold passage."""
    wanted = _norm(gold)
    return any(_norm(s.text) and _norm(s.text) in wanted for s in sources)


def _batch(value: str) -> int:
    """A batch size, refused before the loop's first minutes rather than after them."""
    n = int(value)
    if n < 2:
        raise argparse.ArgumentTypeError("a batch holds two pairs or more (in-batch negatives)")
    return n


def stage(name: str, started: float) -> float:
    now = time.perf_counter()
    print(f"[{(now - started) / 60:5.1f} min] {name}", flush=True)
    return now


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--questions", type=int, help="ask only the first N training questions")
    p.add_argument("--heldout", type=int, help="judge on only the first N held-out questions")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--train-window", type=int, default=256, help="word pieces in training")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="share of the chat log's pairs kept out of training (the job's diagnostic)",
    )
    p.add_argument(
        "--batch-size", type=_batch, default=32, help="pairs a training step reads (2 or more)"
    )
    p.add_argument(
        "--loss",
        default="gist",
        choices=LOSSES,
        help="the training loss (the cached ones hold large batches in little memory)",
    )
    recipe = p.add_mutually_exclusive_group()
    recipe.add_argument(
        "--gold-pairs",
        action="store_true",
        help="a diagnostic: train on the training questions' gold passages instead of the chat "
        "log, the ceiling of what the log's ratings could teach this recipe",
    )
    recipe.add_argument(
        "--cloze",
        action="store_true",
        help="add inverse-cloze pairs from the collection (both corpora) to the chat log's",
    )
    args = p.parse_args()
    train_file, val_file = args.data / "train_dataset.json", args.data / "val_dataset.json"
    if not train_file.is_file() or not val_file.is_file():
        print(f"no 10-K benchmark at {args.data} (train_dataset.json, val_dataset.json)")
        return 2

    from app.service import build_service
    from core.evalstore import EvalStore
    from core.jobstore import JobStore
    from core.settings import Settings
    from eval.runner import EvalContext, compare
    from eval.service import SetRequest, apply, store_set
    from finetune.context import FineTuneContext
    from finetune.embedding.data import PairSet, save_llamaindex
    from finetune.embedding.job import TrainRequest, launch_training
    from finetune.embedding.service import PairsRequest, build_pairs
    from ingest import RecordFields, ingest_paths

    started = time.perf_counter()
    train, val = json.loads(train_file.read_text()), json.loads(val_file.read_text())
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    settings = Settings(data_dir=work / "data")
    settings.app.docs_dir = work / "no-docs"  # the corpus is the filings, not the bundled guide
    settings.retrieval.top_k = 5
    settings.embedding.cache_dir = Path(tempfile.gettempdir()) / "rag-chat-bench-models"

    # 1. Both corpora in the app's collection, each passage a record of its own.
    records = work / "filings.jsonl"
    with records.open("w", encoding="utf-8") as fh:
        for corpus in (train["corpus"], val["corpus"]):
            for cid, text in corpus.items():
                fh.write(json.dumps({"cid": cid, "text": text}) + "\n")
    service = build_service(settings, warm=False)
    current = service.pipeline.current()
    report = ingest_paths(
        settings,
        current.collection,
        current.embed_model,
        datasets=[str(records)],
        fields=RecordFields("text", ["cid"]),
        progress=False,
    )
    t = stage(f"ingested the two corpora: {report.summary()}", started)

    # 2. The training questions asked through the app and rated by whether the answer's sources
    # hold the right passage: the only supervision.
    asked = list(train["queries"].items())[: args.questions]
    up = 0
    for n, (qid, question) in enumerate(asked, start=1):
        gold = train["corpus"][train["relevant_docs"][qid][0]]
        last = list(service.pipeline.ask(f"user-{n % 20}", question))[-1]
        good = found(last.sources, gold)
        service.chatlog.set_feedback(last.turn_id, "up" if good else "down")
        up += good
    t = stage(f"asked {len(asked)} questions; rated {up} up, {len(asked) - up} down", t)

    ctx = FineTuneContext(
        settings,
        JobStore(service.chatlog.db),
        service.registry,
        gate=service.pipeline.embeddings.gate,
    )
    ectx = EvalContext(
        settings,
        service.registry,
        EvalStore(service.chatlog.db),
        embeddings=service.pipeline.embeddings,
    )
    golden = work / "heldout-golden.jsonl"
    with golden.open("w", encoding="utf-8") as fh:
        for qid, question in list(val["queries"].items())[: args.heldout]:
            gold = val["corpus"][val["relevant_docs"][qid][0]]
            fh.write(json.dumps({"user_input": question, "reference_contexts": [gold]}) + "\n")
    set_id, _ = store_set(ectx, SetRequest(path=golden))

    # 3. A candidate from the chat log (with --gold-pairs, from the gold passages), trained as a
    # job, judged by the gate, promoted if it wins.
    if args.gold_pairs:
        gold_file = work / "gold-pairs.json"
        gold_file.write_text(
            json.dumps(
                {
                    "queries": dict(asked),
                    "corpus": train["corpus"],
                    "relevant_docs": {q: train["relevant_docs"][q] for q, _ in asked},
                }
            )
        )
        request = PairsRequest(name="gold", files=[gold_file], negatives=args.negatives)
    else:
        request = PairsRequest(
            name="from-the-chat-log",
            chatlog=True,
            cloze=args.cloze,
            negatives=args.negatives,
        )
    pairs = build_pairs(ctx, request)
    t = stage(pairs.summary(), t)
    job = launch_training(
        ctx,
        TrainRequest(
            dataset_id=pairs.record.id,
            epochs=args.epochs,
            batch_size=args.batch_size,
            loss=args.loss,
            max_seq_length=args.train_window,
            holdout=args.holdout,
        ),
    )
    train_s = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0.0
    t = stage(f"job {job.id}: {job.status} {job.error or ''} in {train_s:.0f} s", t)
    if job.candidate_version_id is None:
        print("the candidate was not trained")
        return 1
    decision, champ, cand = compare(ectx, set_id, job.candidate_version_id)
    decision = apply(ectx, decision)
    base_hit5 = champ.summary["hit_at_5"].mean
    loop_hit5 = cand.summary["hit_at_5"].mean
    t = stage(
        f"gate: {'PROMOTE' if decision.promote else 'REJECT'}: " + "; ".join(decision.reasons), t
    )
    print(
        f"held-out hit@5 {base_hit5:.3f} -> {loop_hit5:.3f}; mrr@10 "
        f"{champ.summary['mrr_at_10'].mean:.3f} -> {cand.summary['mrr_at_10'].mean:.3f}"
    )

    # 4. A degraded candidate: a few steps on pairs whose passages were shuffled among questions.
    data = PairSet.model_validate_json((Path(pairs.path) / "pairs.json").read_text())
    qids = list(data.relevant_docs)
    shuffled = [data.relevant_docs[q] for q in qids]
    random.Random(0).shuffle(shuffled)
    wrong = PairSet(
        queries=data.queries,
        corpus=data.corpus,
        relevant_docs=dict(zip(qids, shuffled, strict=True)),
        sources={q: "file" for q in qids},
    )
    save_llamaindex(wrong, work / "shuffled.json")
    bad_pairs = build_pairs(
        ctx, PairsRequest(name="shuffled", files=[work / "shuffled.json"], negatives=0)
    )
    bad = launch_training(
        ctx,
        TrainRequest(
            dataset_id=bad_pairs.record.id,
            max_steps=12,
            learning_rate=5e-4,
            max_seq_length=args.train_window,
            holdout=0,
        ),
    )
    bad_decision, _, bad_run = compare(ectx, set_id, bad.candidate_version_id)
    bad_decision = apply(ectx, bad_decision)
    stage(
        f"degraded candidate: hit@5 {bad_run.summary['hit_at_5'].mean:.3f}; gate: "
        f"{'PROMOTE' if bad_decision.promote else 'REJECT'}: " + "; ".join(bad_decision.reasons),
        t,
    )
    minutes = (time.perf_counter() - started) / 60
    print(
        f"targets: loop_hit5 >= base_hit5 + 0.03 ({loop_hit5 - base_hit5:+.3f}), the degraded "
        "candidate rejected, under 30 minutes"
    )
    print(
        f"base_hit5={base_hit5:.3f} loop_hit5={loop_hit5:.3f} promoted={int(decision.promote)} "
        f"rejected_degraded={int(not bad_decision.promote)} minutes={minutes:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
