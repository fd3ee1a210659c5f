"""Chat latency and load, in one invocation:
1. retrieval latency p50/p95 at 10k and 100k chunks (synthetic unit vectors in a real Chroma; the
   question is embedded by the real model each time, as in the app);
2. end-to-end latency of the `extractive` provider over the bundled docs;
3. 20 concurrent sessions x 10 questions against the launched app (gradio_client), counting
   errors and checking that every served request is a logged turn.

    .venv/bin/python bench/chat.py [--sessions 20] [--questions 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from core.db.database import open_database
from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
stay_offline()

QUESTIONS = [
    "How do I add my own documents?",
    "Which chat models are supported?",
    "How do I export the chat log?",
    "What does the sources panel show?",
    "What happens when the documents do not cover a question?",
    "How do I use a Chroma server?",
    "Can I rate answers?",
    "What file formats can be indexed?",
    "How does the app handle follow-up questions?",
    "Where is the chat log stored?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORDS = ["backups", "replication", "indexes", "vacuum", "locks", "roles", "logging", "tuning"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def retrieval_latency(
    embed_model, client, settings, n_chunks: int, queries: int = 50
) -> tuple[float, float]:
    """Hybrid retrieval (dense + lexical, the default) over `n_chunks` synthetic passages."""
    import numpy as np

    from core.index.lexical import LexicalSource, lexical_dir
    from core.index.store import open_collection
    from rag.retriever import HybridRetriever

    col = open_collection(client, f"synthetic-{n_chunks}", "synthetic")
    rng = np.random.default_rng(0)
    batch = client.get_max_batch_size()
    for start in range(0, n_chunks, batch):
        size = min(batch, n_chunks - start)
        vecs = rng.standard_normal((size, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        col.add(
            ids=[f"c{start + i}" for i in range(size)],
            embeddings=vecs,
            documents=[
                f"synthetic passage {start + i} about {WORDS[(start + i) % len(WORDS)]}"
                for i in range(size)
            ],
            metadatas=[{"source": "synthetic", "chunk_index": start + i} for i in range(size)],
        )
    lexical = LexicalSource(col, lexical_dir(settings.data_dir, col))
    lexical.get()  # built once, as ingest would
    retriever = HybridRetriever(col, embed_model, settings.retrieval, lexical)
    retriever.retrieve("warm up")
    times = []
    for i in range(queries):
        t0 = time.perf_counter()
        retriever.retrieve(QUESTIONS[i % len(QUESTIONS)] + f" #{i}")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), pct(times, 0.95)


def extractive_latency(service, n: int = 30) -> tuple[float, float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        for _ in service.pipeline.ask("bench", QUESTIONS[i % len(QUESTIONS)]):
            pass
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), pct(times, 0.95)


def load_test(data_dir: Path, sessions: int, questions: int) -> dict:
    from gradio_client import Client

    from core.chatlog import ChatLog

    port = free_port()
    env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "RAG_APP__PORT": str(port)}
    log = (data_dir.parent / "app.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        chatlog = ChatLog(open_database(f"sqlite:///{(data_dir / 'rag.db').resolve()}"))
        before = chatlog.count_turns()
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def session(n: int) -> None:
            client = Client(url, verbose=False)
            history: list = []
            for k in range(questions):
                t0 = time.perf_counter()
                try:
                    # /respond: (cleared box, chat history, sources, badge); the history is
                    # the second whatever else the endpoint shows.
                    history = client.predict(
                        QUESTIONS[(n + k) % len(QUESTIONS)], history, api_name="/respond"
                    )[1]
                    with lock:
                        latencies.append((time.perf_counter() - t0) * 1000)
                except Exception as exc:  # counted, reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        logged = chatlog.count_turns("answered") - before
        return {
            "served": len(latencies),
            "errors": len(errors),
            "first_error": errors[0] if errors else "",
            "p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "p95_ms": pct(latencies, 0.95) if latencies else float("nan"),
            "wall_s": wall,
            "logged": logged,
            "lost": len(latencies) - logged,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="chat latency and load")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--sizes", default="10000,100000", help="synthetic collection sizes")
    args = parser.parse_args()

    from app.service import build_service
    from core.index.store import chroma_client
    from core.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "lat")
        service = build_service(settings)  # first run: indexes docs/
        client = chroma_client(settings)
        results = {}
        for size in (int(s) for s in args.sizes.split(",")):
            p50, p95 = retrieval_latency(service.pipeline.embed_model, client, settings, size)
            results[size] = p95
            print(f"retrieval {size:>7} chunks: p50 {p50:.1f} ms  p95 {p95:.1f} ms")
        p50, p95 = extractive_latency(service)
        print(f"extractive end-to-end:     p50 {p50:.1f} ms  p95 {p95:.1f} ms")
        load = load_test(Path(tmp) / "load", args.sessions, args.questions)
        print(
            f"load {args.sessions}x{args.questions}: served {load['served']}, errors "
            f"{load['errors']}, p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms, "
            f"{load['wall_s']:.1f}s, logged turns {load['logged']}"
        )
        if load["first_error"]:
            print(f"first error: {load['first_error']}")
    largest = max(results)
    print(
        f"retrieval_p95_ms_{largest // 1000}k={results[largest]:.1f} errors={load['errors']} "
        f"lost_turns={load['lost']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
