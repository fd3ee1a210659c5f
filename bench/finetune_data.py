"""Dataset building throughput and memory: synthetic logged turns written into a real SQLite chat
log, then a dataset in `grade` mode (redaction, exact and embedding near-duplicate drop with the
packaged model, a fake teacher served over HTTP on loopback through the real `openai` SDK, the
split, the card), then the training file validated. Run at 1,000 and at 10,000 turns, each in a
fresh process so that its peak memory is its own; the baseline is a plain export of the same log
(`python -m app export-logs`: reading and writing every turn, nothing else).

    flock /tmp/heavy.lock .venv/bin/python bench/finetune_data.py

The fake teacher answers at once, so teacher latency is excluded. The last line holds the headline
figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.db.database import open_database
from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
stay_offline()

TOPICS = [
    "replication",
    "vacuum",
    "indexes",
    "backups",
    "roles",
    "extensions",
    "WAL archiving",
    "logical decoding",
    "partitioning",
    "connection pooling",
    "full text search",
    "JSONB",
    "foreign keys",
    "triggers",
    "query plans",
    "locks",
    "checkpoints",
    "tablespaces",
]
VERBS = ["configure", "monitor", "tune", "troubleshoot", "secure", "upgrade", "test", "automate"]
PLACES = [
    "on a standby",
    "in production",
    "for a small team",
    "on Windows",
    "in a container",
    "with many tenants",
    "after a crash",
    "on a laptop",
]


def passage(rng: random.Random, topic: str) -> str:
    words = " ".join(rng.choice(TOPICS + VERBS) for _ in range(60))
    return f"{topic.capitalize()} is described here. {words}. See the section on {topic}."


def write_log(url: str, n: int, seed: int = 0) -> None:
    """`n` answered turns (5% repeated questions, 10% rated down with a comment, 20% rated up,
    some with an e-mail address or phone number to redact), inserted in bulk."""
    from sqlalchemy.orm import Session

    from core.db.database import open_database
    from core.db.tables import ChatSessionRow, FeedbackRow, TurnRow

    rng = random.Random(seed)
    db = open_database(url)
    engine = db.engine
    start = datetime(2026, 10, 1, tzinfo=UTC)
    questions: list[str] = []
    with Session(engine) as s, s.begin():
        s.add_all(ChatSessionRow(id=f"s{i}") for i in range(n // 10 + 1))
    batch_turns, batch_feedback = [], []
    for i in range(n):
        if questions and rng.random() < 0.05:
            question = rng.choice(questions)
        else:
            topic = rng.choice(TOPICS)
            question = f"How do I {rng.choice(VERBS)} {topic} {rng.choice(PLACES)} (case {i})?"
            if rng.random() < 0.02:
                question += f" Reply to user{i}@example.com or +1 555 {i % 1000:03d} 4567"
            questions.append(question)
        topic = question.split()[4]
        contexts = [
            {
                "chunk_id": f"c{i}-{k}",
                "source": f"/docs/{topic}.html",
                "score": 0.6,
                "text": passage(rng, topic),
            }
            for k in range(4)
        ]
        batch_turns.append(
            {
                "id": i + 1,
                "session_id": f"s{i // 10}",
                "question": question,
                "condensed_question": question,
                "contexts": contexts,
                "answer": f"To do that, follow the steps in [1] and check [2]. Answer {i}.",
                "model_id": "gpt-4o-mini",
                "provider": "openai",
                "prompt_version": "1+abc",
                "latency_ms": 800.0,
                "status": "answered",
                "created_at": start + timedelta(seconds=30 * i),
                "answered_at": start + timedelta(seconds=30 * i + 1),
            }
        )
        r = rng.random()
        if r < 0.1:
            batch_feedback.append(
                {"turn_id": i + 1, "rating": "down", "comment": "It cites the wrong section."}
            )
        elif r < 0.3:
            batch_feedback.append({"turn_id": i + 1, "rating": "up", "comment": None})
        if len(batch_turns) >= 2000 or i == n - 1:
            with engine.begin() as conn:
                conn.execute(TurnRow.__table__.insert(), batch_turns)
                if batch_feedback:
                    conn.execute(FeedbackRow.__table__.insert(), batch_feedback)
            batch_turns, batch_feedback = [], []
    db.dispose()


def child(url: str, out: Path, teacher_url: str, what: str) -> None:
    """Runs in its own process: build (or export) and report time and peak memory as JSON."""

    from core.chatlog import ChatLog, export_jsonl
    from core.settings import Settings, TeacherSettings
    from finetune.dataset import BuildOptions, TurnFilter, build_dataset
    from finetune.dedup import embedder
    from finetune.teacher import Teacher, connect_teacher
    from finetune.turns import turns_from_log
    from finetune.validate import openai_token_counter, validate_file
    from rag.prompt import system_prompt

    out.mkdir(parents=True, exist_ok=True)
    log = ChatLog(open_database(url))
    if what == "export":
        started = time.perf_counter()
        with (out / "export.jsonl").open("w", encoding="utf-8") as f:
            n = export_jsonl(log, f)
        seconds = time.perf_counter() - started
        print(json.dumps({"turns": n, "seconds": seconds, "peak_mb": peak_mb()}))
        return
    settings = Settings(data_dir=out)
    settings.embedding.cache_dir = Path(tempfile.gettempdir()) / "rag-chat-bench-models"
    embed = embedder(settings)  # the packaged model, as `python -m finetune build` runs it
    embed(["warm up"])

    prompt = system_prompt(settings)
    endpoint = TeacherSettings(model="teacher-model", base_url=teacher_url, max_retries=0)
    teacher = Teacher(connect_teacher(endpoint), prompt.text)
    count = openai_token_counter()
    started = time.perf_counter()
    result = build_dataset(
        turns_from_log(log, TurnFilter()),
        out / "datasets",
        BuildOptions(name="bench", mode="grade", concurrency=settings.finetune.teacher.concurrency),
        prompt.text,
        teacher=teacher,
        embed=embed,
        prompt_version=prompt.version,
    )
    built = time.perf_counter() - started
    report = validate_file(result.path / "train.jsonl", count, 65536)
    seconds = time.perf_counter() - started
    card = result.card
    print(
        json.dumps(
            {
                "turns": card.seen,
                "kept": card.kept,
                "dropped": card.dropped,
                "redactions": card.redactions,
                "build_s": built,
                "seconds": seconds,
                "valid": report.ok,
                "billed_tokens": report.billed_tokens,
                "peak_mb": peak_mb(),
            }
        )
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(url: str, out: Path, teacher_url: str, what: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, str(out), teacher_url, what],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"the {what} run failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--child", nargs=4, metavar=("URL", "OUT", "TEACHER", "WHAT"), help=argparse.SUPPRESS
    )
    p.add_argument("--sizes", default="1000,10000", help="turn counts to measure")
    args = p.parse_args()
    if args.child:
        url, out, teacher_url, what = args.child
        child(url, Path(out), teacher_url, what)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    # The fake teacher (tests/support/teacherfake.py) in its own process, as a real server would be.
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.teacherfake"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        teacher_url = server.stdout.readline().strip()
        for n in sizes:
            url = f"sqlite:///{work / f'log-{n}.db'}"
            started = time.perf_counter()
            write_log(url, n)
            print(f"{n} turns written to {url} in {time.perf_counter() - started:.1f} s")
            base = run_child(url, work / f"export-{n}", teacher_url, "export")
            build = run_child(url, work / f"build-{n}", teacher_url, "build")
            results[n] = (base, build)
            rate = build["turns"] / build["seconds"]
            print(
                f"{n} turns: build+validate {build['seconds']:.1f} s ({rate:.0f} turns/s), kept "
                f"{build['kept']}, dropped {build['dropped']}, redacted {build['redactions']}, "
                f"valid={build['valid']}, peak {build['peak_mb']:.0f} MB; plain export "
                f"{base['seconds']:.1f} s ({base['turns'] / base['seconds']:.0f} turns/s, "
                f"peak {base['peak_mb']:.0f} MB): building is "
                f"{build['seconds'] / base['seconds']:.1f}x the export's time"
            )
    finally:
        server.terminate()
    small, large = min(sizes), max(sizes)
    rate = results[large][1]["turns"] / results[large][1]["seconds"]
    peak_small, peak_large = results[small][1]["peak_mb"], results[large][1]["peak_mb"]
    print(
        f"peak memory {large} / {small} turns: {peak_large / peak_small:.2f}x "
        f"(target <= 1.5x); {rate:.0f} turns/s at {large} (target >= 167)"
    )
    print(f"turns_per_s={rate:.0f} peak_mb_1k={peak_small:.0f} peak_mb_10k={peak_large:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
