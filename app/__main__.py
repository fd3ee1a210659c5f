"""`python -m app`: start the chat app. `python -m app export-logs`: write the chat log as JSONL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli import add_turn_filters
from core.dates import parse_since
from core.db.database import open_database
from core.wording import counted

if TYPE_CHECKING:
    from core.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="The document chat app.")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    sub = p.add_subparsers(dest="command")
    exp = sub.add_parser("export-logs", help="write logged turns as JSONL")
    add_turn_filters(exp)
    exp.add_argument("--out", type=Path, help="output file (default: standard output)")
    return p


def export_logs(settings: Settings, args: argparse.Namespace) -> int:
    from core.chatlog import ChatLog, export_jsonl

    since = parse_since(args.since)
    db = open_database(settings.database_url)
    try:
        log = ChatLog(db)
        if args.out:
            with args.out.open("w", encoding="utf-8") as out:
                n = export_jsonl(log, out, since=since, feedback=args.feedback)
        else:
            n = export_jsonl(log, sys.stdout, since=since, feedback=args.feedback)
    finally:
        db.dispose()
    where = f" to {args.out}" if args.out else ""
    print(f"exported {counted(n, 'turn')}{where}", file=sys.stderr)
    return 0


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import gradio as gr

    from app.service import admin_allowed, build_service, require_port_free
    from app.ui import APP_CSS, build_ui

    if args.host:
        settings.app.host = args.host
    if args.port:
        settings.app.port = args.port
    require_port_free(settings.app.host, settings.app.port)
    # The page is served first; the models load right after (the first question waits for them).
    service = build_service(settings, warm=False)
    if service.first_run is not None:
        print(f"first run: indexed the bundled docs: {service.first_run.summary()}")
    admin = admin_allowed(settings)
    if not admin:
        print(
            f"note: {settings.app.host} is not a loopback address and RAG_ADMIN_PASSWORD is not "
            "set, so the admin functions (documents, log export) are not served",
            file=sys.stderr,
        )
    password = settings.app.admin_password
    secret = password.get_secret_value() if password else None
    tabs = []
    if admin:
        from app.evaluate_tab import build_evaluate_tab
        from core.evalstore import EvalStore

        store = EvalStore(service.chatlog.db)
        embeddings = service.pipeline.embeddings  # its models, sentence cache and compute gate
        tabs.append(build_evaluate_tab(settings, store, service.registry, secret, embeddings))
        from app.finetune_tab import build_finetune_tab
        from core.jobstore import JobStore

        jobs = JobStore(service.chatlog.db)
        gate = embeddings.gate
        tabs.append(build_finetune_tab(settings, jobs, service.registry, secret, gate))
    demo = build_ui(
        service.pipeline,
        service.chatlog,
        service if admin else None,
        secret,
        extra_tabs=tabs,
        documents=service.documents,
    )
    demo.queue(default_concurrency_limit=32).launch(
        server_name=settings.app.host,
        server_port=settings.app.port,
        theme=gr.themes.Default(
            font=["ui-sans-serif", "system-ui", "sans-serif"],
            font_mono=["ui-monospace", "monospace"],
        ),
        css=APP_CSS,
        show_error=True,
        prevent_thread_lock=True,
    )
    print(f"open http://{settings.app.host}:{settings.app.port}", flush=True)
    try:
        service.warm_up()
        print(f"model: {service.pipeline.badge}", flush=True)
    except Exception as exc:  # the page stays up; each question says what is wrong
        print(f"error: could not load the models: {exc}", file=sys.stderr, flush=True)
    if admin:
        # Fine-tuning jobs left unfinished by the last run are watched (or trained) again.
        from finetune.context import FineTuneContext
        from finetune.jobs import resume_in_background

        resume_in_background(FineTuneContext(settings, jobs, service.registry, gate=gate))
    demo.block_thread()
    return 0


def main(argv: list[str] | None = None) -> int:
    from core.cli import run_command

    return run_command(_parser(), {"serve": serve, "export-logs": export_logs}, argv, "serve")


if __name__ == "__main__":
    sys.exit(main())
