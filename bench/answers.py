"""Answer quality of the no-LLM (extractive) path on SciQ, against the previous sentence picker
run in the same invocation, on technical documentation (the PostgreSQL manual with questions whose
good answer names an option, keyword, function or setting), plus the start-up and CLI-failure
times a newcomer waits on.

    .venv/bin/python bench/answers.py [--limit N] [--no-timings] [--manual DIR] [--questions FILE]
        [--data DIR] [--no-sciq] [--no-docs]

Documentation mode: the manual's folder is ingested with our ingest into a temporary data
directory (or `--data DIR`, kept and reused when it holds the manual already) and every question
of the answer set is asked through the app's pipeline with the `extractive` provider. Figures: the
share of answers whose quoted text names an expected string (any of them, case-insensitive, not
inside a longer word), page hit@1 of the first source, and the median answer length in words.

The 887 SciQ validation supports are the corpus (ingested by our ingest into a temporary data
directory); every question is asked through the app's pipeline with the `extractive` provider.
Figures: gold-passage hit@1 (the first source is the question's own support), the share of
answers containing the correct answer, and the median answer length in words (quoted sentences
only, without the label and citation marks). The baseline is the picker as it was before answers
were ranked with neighbours and question overlap: cosine of each sentence alone, best three.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
stay_offline()

SCIQ = ROOT.parent / "shared" / "data" / "sciq" / "validation.csv"
MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
DOC_QUESTIONS = ROOT.parent / "shared" / "data" / "pgdocs" / "answers.jsonl"
_QUOTE = re.compile(r"^> (.*?)(?: \[\d+\])+\s*$", re.MULTILINE)
_CODE = re.compile(r"^```\n(.*?)\n```\n\[\d+\]", re.MULTILINE | re.DOTALL)


def quoted(answer: str) -> str:
    """What an extractive answer quotes (sentences and code), without label and citation marks."""
    return " ".join([*_QUOTE.findall(answer), *_CODE.findall(answer)])


def names(text: str, expected: list[str]) -> bool:
    """Whether `text` names any expected string, case-insensitive, not inside a longer word
    (`-f` does not count inside `-file`, nor `-s` inside `--schema-only`)."""
    low = text.lower()
    return any(
        re.search(rf"(?<![\w-]){re.escape(e.lower())}(?![\w])", low) is not None for e in expected
    )


def contains(answer: str, reference: str, strict: bool = False) -> bool:
    """Whether the answer states the reference, case-insensitive, starting on a word boundary;
    it may end inside a word (`skeletal muscles` states `skeletal muscle`) unless `strict`."""
    ref = " ".join(reference.lower().split())
    end = r"(?!\w)" if strict else ""
    return bool(ref) and re.search(rf"(?<!\w){re.escape(ref)}{end}", answer.lower()) is not None


def baseline_answer(pipeline, question: str) -> str:
    """The previous picker: each sentence scored alone by cosine, best three, same retrieval."""
    import numpy as np
    from llama_index.core.schema import QueryBundle

    from rag.units import split_sentences

    embedding = pipeline.embed_model.get_query_embedding(question)
    nodes = pipeline.retriever.retrieve(QueryBundle(question, embedding=embedding))
    candidates = [
        (s, n) for n, node in enumerate(nodes, 1) for s in split_sentences(node.node.get_content())
    ]
    if not candidates:
        return ""
    vectors = pipeline.sentence_vectors.get([s for s, _ in candidates])
    q = np.asarray(embedding, np.float32)
    scores = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q) + 1e-12)
    picked: list[tuple[str, int, float]] = []
    for i in np.argsort(-scores, kind="stable"):
        s, n = candidates[i]
        if any(s == p[0] for p in picked):
            continue
        if picked and (scores[i] < 0.15 or scores[i] < picked[0][2] - 0.2):
            break
        picked.append((s, n, float(scores[i])))
        if len(picked) == 3:
            break
    return "\n\n".join(f"> {s} [{n}]" for s, n, _ in picked)


def answer_quality(limit: int | None) -> dict[str, dict[str, float]]:
    from core.embedding.providers import build_embedding, embedding_id
    from core.index.lexical import LexicalSource, lexical_dir
    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from ingest import RecordFields, ingest_paths
    from rag.pipeline import RagPipeline
    from rag.prompt import system_prompt
    from rag.providers import build_chat_model

    rows = list(csv.DictReader(SCIQ.open(encoding="utf-8")))[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        settings.llm.provider = "extractive"
        embed = build_embedding(settings.embedding, cache_dir=settings.data_dir / "models")
        col = open_collection(chroma_client(settings), "sciq", embedding_id(settings.embedding))
        t0 = time.perf_counter()
        ingest_paths(
            settings,
            col,
            embed,
            datasets=[str(SCIQ)],
            fields=RecordFields("support", ["question"]),
            progress=False,
        )
        print(f"ingested {col.count()} chunks in {time.perf_counter() - t0:.1f} s", flush=True)
        pipeline = RagPipeline(
            col,
            embed,
            build_chat_model(settings.llm),
            None,
            system_prompt(settings),
            settings.retrieval,
            LexicalSource(col, lexical_dir(settings.data_dir, col)),
        )
        results: dict[str, dict[str, list[float]]] = {
            "ours": {"contains": [], "strict": [], "words": [], "hit1": [], "seconds": []},
            "baseline": {"contains": [], "strict": [], "words": [], "seconds": []},
        }
        for row in rows:
            question, reference = row["question"], row["correct_answer"]
            support = " ".join(row["support"].split())
            t0 = time.perf_counter()
            *_, last = pipeline.ask("bench", question)
            results["ours"]["seconds"].append(time.perf_counter() - t0)
            text = quoted(last.text)
            results["ours"]["contains"].append(contains(text, reference))
            results["ours"]["strict"].append(contains(text, reference, strict=True))
            results["ours"]["words"].append(len(text.split()))
            first = last.sources[0].text if last.sources else ""
            results["ours"]["hit1"].append(bool(first) and " ".join(first.split()) in support)
            t0 = time.perf_counter()
            text = quoted(baseline_answer(pipeline, question))
            results["baseline"]["seconds"].append(time.perf_counter() - t0)
            results["baseline"]["contains"].append(contains(text, reference))
            results["baseline"]["strict"].append(contains(text, reference, strict=True))
            results["baseline"]["words"].append(len(text.split()))
        return {
            name: {
                "contains": statistics.fmean(r["contains"]),
                "strict": statistics.fmean(r["strict"]),
                "median_words": statistics.median(r["words"]),
                "mean_ms": 1000 * statistics.fmean(r["seconds"]),
                **({"hit1": statistics.fmean(r["hit1"])} if "hit1" in r else {}),
            }
            for name, r in results.items()
        }


def docs_quality(manual: Path, questions: Path, data: Path | None) -> dict[str, float]:
    """The documentation mode (see the module's docstring)."""
    import json

    from core.index.lexical import LexicalSource, lexical_dir
    from core.index.store import open_index
    from core.settings import Settings
    from ingest import ingest_paths
    from rag.pipeline import RagPipeline
    from rag.prompt import system_prompt
    from rag.providers import build_chat_model

    rows = [json.loads(line) for line in questions.read_text().splitlines() if line.strip()]
    keep = tempfile.TemporaryDirectory() if data is None else None
    settings = Settings(data_dir=Path(keep.name) if keep else data)
    settings.llm.provider = "extractive"
    settings.chroma.collection = "manual"
    col, embed = open_index(settings)
    t0 = time.perf_counter()
    report = ingest_paths(settings, col, embed, paths=[manual], progress=False)
    print(f"manual: {report.summary()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    pipeline = RagPipeline(
        col,
        embed,
        build_chat_model(settings.llm),
        None,
        system_prompt(settings),
        settings.retrieval,
        LexicalSource(col, lexical_dir(settings.data_dir, col)),
    )
    named, hits, words, base = [], [], [], []
    for row in rows:
        *_, last = pipeline.ask("bench", row["q"])
        text = quoted(last.text)
        named.append(names(text, row["expect"]))
        base.append(names(quoted(baseline_answer(pipeline, row["q"])), row["expect"]))
        first = Path(last.sources[0].source).name if last.sources else ""
        hits.append(first in row["gold"])
        words.append(len(text.split()))
        if os.environ.get("BENCH_VERBOSE"):
            mark = "+" if named[-1] else "-"
            print(f"{mark} {row['q']} -> {text[:160]!r} ({first})", flush=True)
    if keep is not None:
        keep.cleanup()
    return {
        "answer_contains": statistics.fmean(named),
        "baseline_contains": statistics.fmean(base),
        "hit1": statistics.fmean(hits),
        "median_words": statistics.median(words),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup_seconds(data_dir: Path) -> float:
    """Seconds from `python -m app` to the first served page, on a data directory that has been
    through its first run (the bundled docs already indexed)."""

    def serve() -> float:
        port = _free_port()
        env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "RAG_APP__PORT": str(port)}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while proc.poll() is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                    return time.perf_counter() - t0
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError(f"the app exited with {proc.returncode}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    serve()  # the first run indexes the bundled docs
    return serve()


def cli_fail_seconds() -> float:
    """Seconds until `python -m ingest` reports a path that does not exist."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "/no/such/path"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode == 0:
        raise RuntimeError("ingest accepted a missing path")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--no-timings", action="store_true", help="skip start-up and CLI timings")
    parser.add_argument("--manual", type=Path, default=MANUAL, help="documentation folder")
    parser.add_argument("--questions", type=Path, default=DOC_QUESTIONS, help="answer set")
    parser.add_argument("--data", type=Path, help="a data directory to keep the manual's index in")
    parser.add_argument("--no-sciq", action="store_true", help="documentation mode only")
    parser.add_argument("--no-docs", action="store_true", help="SciQ only")
    args = parser.parse_args()
    docs = {"answer_contains": float("nan"), "hit1": float("nan"), "median_words": float("nan")}
    if not args.no_docs:
        if not args.manual.is_dir() or not args.questions.is_file():
            print(
                f"missing {args.manual} or {args.questions}: install the manual with "
                "`apt-get install -y postgresql-doc-15`, or pass --manual and --questions",
                file=sys.stderr,
            )
            return 2
        docs = docs_quality(args.manual, args.questions, args.data)
        print(
            f"docs: answer names the expected term {docs['answer_contains']:.3f} (target 0.80; "
            f"the previous picker on the same retrieval {docs['baseline_contains']:.3f}), "
            f"first source on the right page {docs['hit1']:.3f}, median "
            f"{docs['median_words']:.0f} words",
            flush=True,
        )
    if args.no_sciq:
        print(
            f"docs_answer_contains={docs['answer_contains']:.3f} docs_hit1={docs['hit1']:.3f} "
            f"docs_median_words={docs['median_words']:.0f}"
        )
        return 0
    if not SCIQ.exists():
        print(f"missing {SCIQ}: the SciQ validation set is needed", file=sys.stderr)
        return 2
    figures = answer_quality(args.limit)
    for name, f in figures.items():
        print(
            f"{name:9s} answer_contains={f['contains']:.3f} (whole words {f['strict']:.3f}) "
            f"median_words={f['median_words']:.0f} "
            f"mean_ms={f['mean_ms']:.0f}" + (f" hit1={f['hit1']:.3f}" if "hit1" in f else "")
        )
    ours, base = figures["ours"], figures["baseline"]
    print(
        f"ratios: answer_contains {ours['contains'] / max(base['contains'], 1e-9):.3f}x, "
        f"median words {ours['median_words'] / max(base['median_words'], 1):.2f}x "
        "(targets: answer_contains >= 0.88, median words not above the baseline's)"
    )
    startup = cli_fail = float("nan")
    if not args.no_timings:
        with tempfile.TemporaryDirectory() as tmp:
            startup = startup_seconds(Path(tmp) / "data")
        cli_fail = cli_fail_seconds()
        print(
            f"app serving after {startup:.1f} s (target < 10); "
            f"ingest error after {cli_fail:.1f} s (target < 3)"
        )
    print(f"sciq hit1={ours['hit1']:.3f} startup_s={startup:.1f} cli_fail_s={cli_fail:.1f}")
    print(
        f"docs_answer_contains={docs['answer_contains']:.3f} docs_hit1={docs['hit1']:.3f} "
        f"docs_median_words={docs['median_words']:.0f} "
        f"sciq_answer_contains={ours['contains']:.3f} median_words={ours['median_words']:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
