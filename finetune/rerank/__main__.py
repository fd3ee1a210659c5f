"""`python -m finetune.rerank train DATASET`: a cross-encoder reranker trained on a stored pairs
dataset (from `python -m finetune.embedding build`: rated chat turns, headings, inverse cloze,
LLM questions, a `datasets` table, LlamaIndex JSON files) with hard negatives from the app's
retriever, as a job, registered as a candidate `reranker` version for the gate to judge."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.cli import request_from

if TYPE_CHECKING:
    from core.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.rerank", description=__doc__)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a reranker as a job; register a candidate")
    t.add_argument("dataset", help="pairs dataset id or name (from `finetune.embedding build`)")
    t.add_argument(
        "--base",
        dest="base_model",
        help="a cross-encoder folder to start from (default: the packaged all-MiniLM-L6-v2's "
        "weights with a new scoring head)",
    )
    t.add_argument("--loss", default="listwise", help="listwise|bce")
    t.add_argument("--negatives", type=int, default=3, help="hard negatives per question")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument(
        "--max-length", type=int, default=128, help="word pieces of question+passage in training"
    )
    t.add_argument("--limit", type=int, help="train on at most N questions (a sample)")
    t.add_argument("--max-steps", type=int, help="stop after this many steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-register", action="store_true", help="train only")
    return p


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from finetune.context import FineTuneContext
    from finetune.report import job_line
    from finetune.rerank.job import RerankRequest, launch_reranker

    request = request_from(
        args,
        RerankRequest,
        dataset_id=args.dataset,
        learning_rate=args.lr,
        register=not args.no_register,
    )
    ctx = FineTuneContext.open(settings)
    with tqdm(unit="step", desc="training", disable=args.no_progress) as bar:

        def progress(step: int, total: int) -> None:
            bar.total, bar.n = (total if total and total > 0 else None), step
            bar.refresh()

        job = launch_reranker(ctx, request, progress)
    for event in ctx.store.events(job.id):
        if event.step is None:
            print(f"  {event.message}")
    print(job_line(job))
    if job.candidate_version_id:
        print(
            f"judge reranker v{job.candidate_version_id} on questions its training recipe did "
            "not make (a golden set, rated chat turns it did not train on): python -m eval "
            f"compare --candidate {job.candidate_version_id} --set GOLDEN.jsonl"
        )
    return 0 if job.status == "succeeded" else 1


COMMANDS = {"train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    from core.cli import run_command

    return run_command(_parser(), COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
