"""`python -m finetune build|validate|launch|status|resume|cancel|list`: chat logs to training data,
checked and priced, trained locally or on OpenAI, registered as candidates; each command ends with
a one-line summary. `python -m finetune embed ...` is embedding-model fine-tuning, `python -m
finetune rerank ...` the reranker's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli import add_turn_filters, request_from
from core.dates import parse_since
from core.errors import RagError
from finetune.dataset import MODES

if TYPE_CHECKING:
    from core.settings import Settings
    from finetune.context import FineTuneContext


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a dataset from the chat log or a `datasets` source")
    b.add_argument("--name", help="dataset name (default: a time stamp)")
    b.add_argument(
        "--mode",
        choices=MODES,
        help="teacher mode (default: grade with a teacher configured, else none)",
    )
    add_turn_filters(b)
    b.add_argument("--until", help="only turns before this ISO date/time")
    b.add_argument("--chat-version", type=int, help="only turns answered by this registry version")
    b.add_argument(
        "--include-failed", action="store_true", help="also look at turns that were not answered"
    )
    b.add_argument("--min-answer-chars", type=int, help="shortest logged answer used")
    b.add_argument(
        "--dedup-similarity",
        type=float,
        help="embedding cosine similarity from which a question is a near-duplicate",
    )
    b.add_argument(
        "--no-embedding-dedup",
        action="store_true",
        help="drop only exact repeats (normalised text), not near-duplicates",
    )
    b.add_argument("--grade-threshold", type=float, help="lowest rubric score kept (1-5)")
    b.add_argument("--validation-share", type=float, help="share of examples for validation")
    g = b.add_argument_group("static data: a `datasets` source instead of the chat log")
    g.add_argument("--dataset", help="hub name (cached) or a .jsonl/.json/.csv/.parquet file")
    g.add_argument("--question-field", default="question", help="column -> user message")
    g.add_argument("--answer-field", default="correct_answer", help="column -> assistant answer")
    g.add_argument(
        "--explanation-field",
        default="support",
        help="column appended to the answer as ' Explanation: ...' ('' for none)",
    )
    g.add_argument("--context-field", help="column -> passages in the user message")
    g.add_argument("--split", help="dataset split (default train)")
    g.add_argument("--limit", type=int, help="use only the first N rows")

    v = sub.add_parser("validate", help="check a dataset (or a JSONL file) and estimate its cost")
    v.add_argument("dataset", nargs="?", type=int, help="dataset id")
    v.add_argument("--file", type=Path, help="a JSONL file instead of a stored dataset")
    v.add_argument("--backend", choices=["local", "openai"])
    v.add_argument("--method", choices=["supervised", "dpo"])
    v.add_argument("--base-model", help="model whose token limit and price apply")

    la = sub.add_parser("launch", help="validate and start a fine-tuning job on a dataset")
    la.add_argument("dataset", type=int, help="dataset id")
    la.add_argument("--backend", choices=["local", "openai"])
    la.add_argument("--method", choices=["supervised", "dpo"])
    la.add_argument("--base-model", help="HF model directory (local) or OpenAI model name")
    la.add_argument(
        "--detach", action="store_true", help="openai: return after creating the job, do not poll"
    )

    st = sub.add_parser("status", help="a job's status and recent events")
    st.add_argument("job", type=int)
    st.add_argument("--watch", action="store_true", help="keep polling until the job is final")
    sub.add_parser("resume", help="resume watching (or training) every unfinished job")
    c = sub.add_parser("cancel", help="cancel a job")
    c.add_argument("job", type=int)
    sub.add_parser("list", help="datasets and jobs")
    return p


def _context(settings: Settings) -> FineTuneContext:
    from finetune.context import FineTuneContext

    return FineTuneContext.open(settings)


def build(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from finetune.service import BuildRequest, build_chat_dataset

    request = request_from(
        args,
        BuildRequest,
        since=parse_since(args.since),
        until=parse_since(args.until),
        chat_version_id=args.chat_version,
        near_duplicates=not args.no_embedding_dedup,
        explanation_field=args.explanation_field or None,
    )
    with tqdm(unit="turn", desc="building", file=sys.stderr) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        built = build_chat_dataset(_context(settings), request, progress)
    print(f"{built.summary()} in {built.result.path}")
    return 0


def validate(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.service import validate_dataset

    if not args.file and args.dataset is None:
        raise RagError("name a dataset id, or --file FILE.jsonl")
    checked = validate_dataset(
        _context(settings), args.dataset, args.file, args.backend, args.method, args.base_model
    )
    for e in checked.report.errors:
        print(f"line {e.line}: {e.kind}: {e.message}")
    for w in checked.report.warnings:
        print(f"warning: {w}")
    print(checked.summary())
    return 0 if checked.report.ok else 1


def launch(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from finetune.jobs import monitor
    from finetune.report import job_line
    from finetune.service import launch_job

    ctx = _context(settings)
    backend = args.backend or settings.finetune.backend
    bars: list[tqdm] = []  # made on the first step, so an early error prints no empty bar

    def progress(step: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(unit="step", desc="training", file=sys.stderr))
        bar = bars[0]
        bar.total = total if total and total > 0 else None
        bar.n = step
        bar.refresh()

    try:
        job = launch_job(
            ctx, args.dataset, backend, args.method, args.base_model, progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    if backend == "openai" and not args.detach and not job.done:
        print(job_line(job), file=sys.stderr)
        job = monitor(ctx, job.id, on_poll=lambda j: print(job_line(j), file=sys.stderr))
    print(job_line(job))
    return 0 if job.status in ("succeeded", "queued", "running", "validating_files") else 1


def status(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.jobs import monitor, poll_once
    from finetune.report import job_line

    ctx = _context(settings)
    job = ctx.store.job(args.job)
    if args.watch:
        job = monitor(ctx, job.id, on_poll=lambda j: print(job_line(j), file=sys.stderr))
    elif job.backend == "openai" and not job.done:
        job = poll_once(ctx, job.id)
    for event in ctx.store.events(job.id)[-15:]:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items())
        print(f"{event.created_at:%Y-%m-%d %H:%M:%S} {event.level:7} {event.message} {metrics}")
    print(job_line(job))
    return 0


def resume(settings: Settings) -> int:
    from finetune.report import job_line
    from finetune.service import resume_jobs

    jobs = resume_jobs(_context(settings))
    for job in jobs:
        print(job_line(job), file=sys.stderr)
    done = sum(j.done for j in jobs)
    print(f"resumed {len(jobs)} unfinished jobs; {done} now final")
    return 0


def cancel(settings: Settings, args: argparse.Namespace) -> int:
    from finetune.report import job_line
    from finetune.service import cancel_job

    job = cancel_job(_context(settings), args.job)
    print(job_line(job) + ("" if job.done else " (cancel requested; the trainer stops soon)"))
    return 0


def list_all(settings: Settings) -> int:
    from finetune.report import job_line

    ctx = _context(settings)
    datasets, jobs = ctx.store.datasets(), ctx.store.jobs()
    for d in datasets:
        c = d.card
        print(
            f"dataset {d.id} {d.name!r} ({c.source}, {c.mode}): {c.train_examples} train / "
            f"{c.validation_examples} validation, {c.preference_pairs} pairs, "
            f"{d.created_at:%Y-%m-%d %H:%M}"
        )
    for j in jobs:
        print(job_line(j))
    print(f"{len(datasets)} datasets, {len(jobs)} jobs")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["embed"]:
        # Embedding-model fine-tuning has its own CLI; imported only when asked for.
        try:
            from finetune.embedding.cli import main as embed_main
        except ModuleNotFoundError as exc:
            if exc.name not in ("finetune.embedding", "finetune.embedding.cli"):
                raise
            print(
                "error: embedding fine-tuning (finetune.embedding) is not installed",
                file=sys.stderr,
            )
            return 2
        return embed_main(argv[1:])
    if argv[:1] == ["rerank"]:  # the reranker likewise
        from finetune.rerank.__main__ import main as rerank_main

        return rerank_main(argv[1:])
    from core.cli import run_command

    return run_command(_parser(), COMMANDS, argv)


COMMANDS = {
    "build": build,
    "validate": validate,
    "launch": launch,
    "status": status,
    "resume": lambda settings, args: resume(settings),
    "cancel": cancel,
    "list": lambda settings, args: list_all(settings),
}


if __name__ == "__main__":
    sys.exit(main())
