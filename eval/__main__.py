"""`python -m eval run|compare|promote|rollback|history|register|report|schedule`: evaluate model
versions on a set, gate a candidate against the champion, and move the registry; each command ends
with a one-line summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli import add_turn_filters, request_from
from core.dates import parse_since

if TYPE_CHECKING:
    from eval.runner import EvalContext


def _set_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation set (default: RAG_EVAL__GOLDEN_SET)")
    g.add_argument("--set", type=Path, dest="set_path", help="JSONL golden set (Ragas fields)")
    g.add_argument("--dataset", help="a `datasets` source: hub name or .csv/.json/.jsonl/.parquet")
    g.add_argument("--question-field", default="question", help="dataset column -> user_input")
    g.add_argument("--reference-field", default="correct_answer", help="column -> reference")
    g.add_argument("--contexts-field", default="support", help="column -> reference_contexts")
    g.add_argument("--sources-field", help="column -> reference_sources")
    g.add_argument("--split", help="dataset split (default train)")
    g.add_argument("--limit", type=int, help="use only the first N samples")
    g.add_argument("--from-log", action="store_true", help="a sample of logged turns")
    g.add_argument("--size", type=int, default=100, help="turns to sample with --from-log")
    add_turn_filters(g, "--from-log: ")
    g.add_argument(
        "--teacher",
        action="store_true",
        help="--from-log: the judge LLM writes references for turns without a thumbs-up",
    )
    g.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="N questions written by the judge LLM from indexed chunks",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate versions (default: the active ones) on a set")
    _set_options(run)
    run.add_argument("--chat", type=int, help="chat version id (default: active)")
    run.add_argument("--embedding", type=int, help="embedding version id (default: active)")
    run.add_argument("--reranker", type=int, help="reranker version id (default: active)")
    run.add_argument("--report", type=Path, help="also write the HTML report here")
    cmp_ = sub.add_parser("compare", help="candidate against the champion; the gate decides")
    _set_options(cmp_)
    cmp_.add_argument("--candidate", type=int, required=True, help="candidate version id")
    cmp_.add_argument(
        "--auto-promote", action="store_true", help="promote a winner, reject a loser"
    )
    cmp_.add_argument("--report", type=Path, help="also write the HTML report here")
    pro = sub.add_parser("promote", help="make a version active (an admin's decision)")
    pro.add_argument("version", type=int)
    pro.add_argument("--reason", default="admin", help="why (default: admin)")
    rb = sub.add_parser("rollback", help="restore the previous active version of a kind")
    rb.add_argument("kind", choices=["chat", "embedding", "reranker"])
    rb.add_argument("--reason", default="admin")
    hist = sub.add_parser("history", help="versions, promotions and rollbacks, recent runs")
    hist.add_argument("--kind", choices=["chat", "embedding", "reranker"])
    reg = sub.add_parser("register", help="add a candidate version (finetune does this itself)")
    reg.add_argument("--kind", choices=["chat", "embedding", "reranker"], required=True)
    reg.add_argument("--name", required=True)
    reg.add_argument("--spec", default="{}", help="settings overrides, e.g. '{\"llm\": {...}}'")
    reg.add_argument("--parent", type=int, help="parent version id")
    reg.add_argument("--provenance", default="{}", help="JSON: dataset card hash, job id, ...")
    rep = sub.add_parser("report", help="write the HTML report of a run")
    rep.add_argument("run", type=int)
    rep.add_argument("--out", type=Path, help="output file (default: <data_dir>/reports/)")
    sch = sub.add_parser("schedule", help="evaluate on a cron schedule (APScheduler)")
    _set_options(sch)
    sch.add_argument("--cron", help="crontab expression (default RAG_EVAL__SCHEDULE_CRON)")
    sch.add_argument("--auto-promote", action="store_true", help="promote winners")
    sch.add_argument("--once", action="store_true", help="run one scheduled evaluation now")
    return p


def load_set(ctx: EvalContext, args: argparse.Namespace) -> int:
    """Store the set the options name; returns its id."""
    from eval.service import SetRequest, store_set

    request = request_from(
        args,
        SetRequest,
        path=args.set_path,
        reference_field=args.reference_field or None,
        contexts_field=args.contexts_field or None,
        since=parse_since(args.since),
    )
    set_id, notes = store_set(ctx, request)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return set_id


def _context(settings) -> EvalContext:
    from eval.service import open_context

    ctx = open_context(settings)
    if ctx.judge is None:
        print("note: no judge LLM configured: LLM metrics are not scored", file=sys.stderr)
    return ctx


def main(argv: list[str] | None = None) -> int:
    from core.cli import run_command

    return run_command(_parser(), COMMANDS, argv)


def cmd_run(settings, args) -> int:
    from eval.runner import run_eval
    from eval.service import run_line

    ctx = _context(settings)
    run = run_eval(ctx, load_set(ctx, args), args.chat, args.embedding, reranker_id=args.reranker)
    if args.report:
        from eval.report import write_report

        write_report(ctx, run.id, args.report)
    print(run_line(run))
    return 0


def cmd_compare(settings, args) -> int:
    from eval.runner import compare
    from eval.service import decision_line, run_line

    ctx = _context(settings)
    decision, champ, cand = compare(ctx, load_set(ctx, args), args.candidate, args.auto_promote)
    print(run_line(champ))
    print(run_line(cand))
    if args.report:
        from eval.report import write_report

        write_report(ctx, cand.id, args.report)
    print(decision_line(decision))
    return 0


def cmd_promote(settings, args) -> int:
    from eval.runner import EvalContext
    from eval.service import promote

    # An embedding version with its own collection is re-embedded first; the switch follows.
    done = promote(EvalContext.open(settings), args.version, reason=args.reason)
    event = done.event
    if done.reembed is not None:
        print(done.reembed.summary())
    was = f"was v{event.previous_id}" if event.previous_id else "the first of its kind"
    print(f"{event.kind} v{event.version_id} is active ({was}): {event.reason}")
    if not done.approved:
        print(f"promoted by hand: {done.verdict}; `python -m eval rollback {event.kind}` undoes it")
    return 0


def cmd_rollback(settings, args) -> int:
    from eval.runner import EvalContext
    from eval.service import rollback

    event = rollback(EvalContext.open(settings), args.kind, reason=args.reason)
    print(
        f"rolled back {event.kind}: v{event.version_id} is active again (was v{event.previous_id})"
    )
    return 0


def cmd_history(settings, args) -> int:
    from eval.runner import EvalContext
    from eval.service import run_line

    ctx = EvalContext.open(settings)
    reg = ctx.registry
    print("versions:")
    for v in reg.versions(args.kind):
        print(f"  {v.kind:9} v{v.id:<4} {v.status:9} {v.name}  (parent {v.parent_id})")
    print("history:")
    events = reg.history(args.kind)
    for e in events:
        print(
            f"  {e.created_at:%Y-%m-%d %H:%M} {e.kind:9} {e.action:8} v{e.version_id} "
            + (f"(was v{e.previous_id})" if e.previous_id else "(first)")
            + f": {e.reason}"
        )
    print("recent runs:")
    for r in ctx.store.runs(limit=10):
        print("  " + (run_line(r) if r.status == "done" else f"run {r.id}: {r.status}"))
    active = reg.active_all()
    print(
        f"{len(events)} events; active: "
        + ", ".join(f"{k} v{v.id}" for k, v in active.items() if v is not None)
    )
    return 0


def cmd_register(settings, args) -> int:
    from eval.runner import EvalContext
    from eval.service import register

    v = register(
        EvalContext.open(settings), args.kind, args.name, args.spec, args.parent, args.provenance
    )
    print(f"registered {v.label} ({v.name}) as a candidate")
    return 0


def cmd_report(settings, args) -> int:
    from eval.report import write_report
    from eval.runner import EvalContext

    ctx = EvalContext.open(settings)
    out = args.out or settings.data_dir / "reports" / f"run-{args.run}.html"
    write_report(ctx, args.run, out)
    print(f"report of run {args.run}: {out}")
    return 0


def cmd_schedule(settings, args) -> int:
    from eval.schedule import run_scheduled, start_scheduler

    ctx = _context(settings)
    auto = args.auto_promote or settings.eval.auto_promote

    def load() -> int:
        return load_set(ctx, args)

    if args.once:
        outcome = run_scheduled(ctx, load, auto)  # prints its one-line summary
        return 0 if outcome.ran else 1
    from eval.schedule import cron_trigger

    cron = args.cron or settings.eval.schedule_cron
    cron_trigger(cron)  # a bad expression fails here, before anything starts
    print(f"evaluating on cron {cron!r}; Ctrl-C stops", flush=True)
    start_scheduler(ctx, load, cron, auto, blocking=True)
    return 0


COMMANDS = {
    "run": cmd_run,
    "compare": cmd_compare,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "history": cmd_history,
    "register": cmd_register,
    "report": cmd_report,
    "schedule": cmd_schedule,
}


if __name__ == "__main__":
    sys.exit(main())
