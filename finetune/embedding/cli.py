"""`python -m finetune.embedding build|train|adapter|evaluate`: training pairs from the chat log and
the corpus, a fine-tuned embedding model or a query adapter registered as a candidate `embedding`
version, and held-out retrieval figures of champion against candidate; one-line summaries."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli import request_from
from core.dates import parse_since

if TYPE_CHECKING:
    from core.settings import Settings
    from finetune.context import FineTuneContext


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.embedding", description=__doc__)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="training pairs (+ mined hard negatives) and a dataset card")
    b.add_argument("--name", help="dataset name (default: a timestamp)")
    b.add_argument(
        "--chatlog",
        action="store_true",
        help="rated-up turns -> the chunks their answers cited (the default source)",
    )
    b.add_argument("--since", help="--chatlog: only turns at or after this ISO date")
    b.add_argument(
        "--teacher",
        action="store_true",
        help="--chatlog: also unrated turns the chat LLM grades 4/5 or more for their passages",
    )
    b.add_argument(
        "--headings",
        action="store_true",
        help="corpus only: headings and titles -> their section (measured worse on real "
        "questions; see finetune/embedding/README.md)",
    )
    b.add_argument(
        "--cloze", action="store_true", help="corpus only: inverse cloze, sentence -> its chunk"
    )
    b.add_argument("--generate", type=int, metavar="N", help="LLM questions for N chunks")
    b.add_argument("--dataset", help="a `datasets` source (hub name or local file)")
    b.add_argument("--question-field", default="question", help="--dataset question column")
    b.add_argument("--text-field", default="support", help="--dataset passage column")
    b.add_argument("--split", help="--dataset split (default train)")
    b.add_argument("--limit", type=int, help="--dataset: first N rows")
    b.add_argument("--file", type=Path, action="append", default=[], help="LlamaIndex JSON file")
    b.add_argument("--negatives", type=int, default=1, help="hard negatives per query (0: none)")
    b.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="fine-tune the active embedding model; register a candidate")
    t.add_argument("dataset", help="dataset id or name (from `build`)")
    t.add_argument("--loss", default="gist", help="gist|symmetric|mnrl|cached|cached-symmetric")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--mini-batch-size", type=int, default=16, help="CachedMNRL forward size")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument(
        "--max-seq-length",
        type=int,
        help="word pieces per text in training (default 256, or the active model's window if "
        "smaller; the candidate is read at the active model's window whatever it trained at)",
    )
    t.add_argument("--max-steps", type=int, help="stop after this many steps")
    t.add_argument(
        "--holdout", type=float, default=0.2, help="share held out for the training diagnostic"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-register", action="store_true", help="train and score only")

    a = sub.add_parser("adapter", help="train a linear query adapter; register a candidate")
    a.add_argument("dataset", help="dataset id or name (from `build`)")
    a.add_argument("--epochs", type=int, default=20)
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--holdout", type=float, default=0.2, help="share of questions held out")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-register", action="store_true", help="train and score only")

    e = sub.add_parser(
        "evaluate",
        help="training diagnostic: the active model vs a candidate on its held-out pairs",
    )
    e.add_argument("candidate", type=int, help="embedding version id")
    e.add_argument("--file", type=Path, help="LlamaIndex JSON (default: the candidate's hold-out)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 on an error, with what to do)."""
    from core.cli import run_command

    return run_command(_parser(), COMMANDS, argv)


# -- commands ----------------------------------------------------------------------------------


def _context(settings: Settings) -> FineTuneContext:
    from finetune.context import FineTuneContext

    return FineTuneContext.open(settings)


def _summary(m: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.embedding.service import PairsRequest, build_pairs

    request = request_from(args, PairsRequest, since=parse_since(args.since), files=args.file)
    print(build_pairs(_context(settings), request, progress=not args.no_progress).summary())
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from finetune.embedding.job import TrainRequest, launch_training
    from finetune.report import job_line

    request = request_from(
        args,
        TrainRequest,
        dataset_id=args.dataset,
        learning_rate=args.lr,
        register=not args.no_register,
    )
    ctx = _context(settings)
    with tqdm(unit="step", desc="training", disable=args.no_progress) as bar:

        def progress(step: int, total: int) -> None:
            bar.total, bar.n = (total if total and total > 0 else None), step
            bar.refresh()

        job = launch_training(ctx, request, progress)
    for event in ctx.store.events(job.id):
        if event.step is None:
            print(f"  {event.message}")
    print(job_line(job))
    if job.candidate_version_id:
        print(_next_steps(job.candidate_version_id))
    return 0 if job.status == "succeeded" else 1


def _next_steps(version_id: int) -> str:
    return (
        f"judge embedding v{version_id} on questions its training recipe did not make (a golden "
        "set, rated chat turns it did not train on): "
        f"RAG_EVAL__PRIMARY_METRIC=mrr_at_10 python -m eval compare --candidate {version_id} "
        "--set GOLDEN.jsonl (re-embeds into its own collection first)"
    )


def cmd_adapter(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.embedding.service import AdapterRequest, train_query_adapter

    version, line = train_query_adapter(
        _context(settings),
        request_from(args, AdapterRequest, learning_rate=args.lr, register=not args.no_register),
        progress=not args.no_progress,
    )
    print(line)
    if version is not None:
        print(_next_steps(version.id))
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.embedding.service import DIAGNOSTIC, heldout_diagnostic

    rows = heldout_diagnostic(_context(settings), args.candidate, args.file)
    for label, figures in rows.items():
        print(f"{label}: {_summary(figures)}")
    champ, cand = rows.values()
    delta = cand["mrr_at_10"] - champ["mrr_at_10"]
    print(
        f"mrr_at_10 {champ['mrr_at_10']:.3f} -> {cand['mrr_at_10']:.3f} ({delta:+.3f}); "
        f"{DIAGNOSTIC}: {_next_steps(args.candidate)}"
    )
    return 0


COMMANDS = {
    "build": cmd_build,
    "train": cmd_train,
    "adapter": cmd_adapter,
    "evaluate": cmd_evaluate,
}
