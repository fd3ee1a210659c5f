"""Answers under load: the compute gate admits sessions in order and a few at a time; sentence
vectors are embedded once, kept on disk, never stale after a change, and survive a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.compute import ComputeGate
from rag.sentencestore import SentenceStore, store_path
from rag.synthesis import SentenceVectors

ROOT = Path(__file__).resolve().parent.parent


def test_gate_admits_in_arrival_order_and_never_more_than_its_slots():
    gate = ComputeGate(slots=2)
    running, peak, order = 0, 0, []
    lock = threading.Lock()
    release = threading.Event()

    def work(n: int) -> None:
        nonlocal running, peak
        with gate.hold():
            with lock:
                running += 1
                peak = max(peak, running)
                order.append(n)
            release.wait(5)
            time.sleep(0.01)
            with lock:
                running -= 1

    threads = []
    for n in range(8):
        t = threading.Thread(target=work, args=(n,))
        t.start()
        threads.append(t)
        # the next session arrives only once this one holds a slot or waits in line
        deadline = time.time() + 5
        while len(order) + len(gate._queue) <= n and time.time() < deadline:
            time.sleep(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert peak == 2 and order == list(range(8)) and gate.waited == 6


def test_gate_is_reentrant():
    gate = ComputeGate(slots=1)
    with gate.hold(), gate.hold():  # a gated call inside a gated call must not deadlock
        pass
    with gate.hold():
        pass


def test_ctrl_c_while_waiting_gives_the_place_in_line_back():
    """A Ctrl-C (SIGINT) that lands while a caller waits in the gate must not leave its ticket in
    the queue: everyone behind it would wait forever."""
    gate = ComputeGate(slots=1)
    holding, done = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.hold():
            holding.set()
            done.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(5)
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # "Ctrl-C" while the main thread waits below
    try:
        with pytest.raises(KeyboardInterrupt), gate.hold():
            pytest.fail("the gate let a second holder in beside the first")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert list(gate._queue) == []
    done.set()
    t.join(5)
    with gate.hold():  # the next caller gets in at once
        pass


class Counting:
    def __init__(self, embed_model):
        self.model = embed_model
        self.calls: list[list[str]] = []

    def get_text_embedding_batch(self, texts):
        self.calls.append(list(texts))
        return self.model.get_text_embedding_batch(texts)


def test_twenty_sessions_on_a_cold_cache_embed_each_sentence_once(embed_model, tmp_path):
    counting = Counting(embed_model)
    vectors = SentenceVectors(
        counting,
        store=SentenceStore(tmp_path / "s.sqlite", "model-a"),
        gate=ComputeGate(slots=1),
    )
    sentences = [f"Passage sentence number {i} about harbours and ships." for i in range(12)]
    results, errors = [], []

    def session() -> None:
        try:
            results.append(vectors.get(sentences))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 20
    assert sorted(s for call in counting.calls for s in call) == sorted(sentences)
    assert all(np.array_equal(r, results[0]) for r in results)


def test_vectors_persist_across_processes_and_follow_the_text(embed_model, tmp_path):
    path = store_path(tmp_path, "local:model-a")
    first = SentenceVectors(Counting(embed_model), store=SentenceStore(path, "local:model-a"))
    old = "The ferry leaves the harbour at seven."
    before = first.get([old])
    # A new process (a restart) reads them back instead of embedding again.
    counting = Counting(embed_model)
    second = SentenceVectors(counting, store=SentenceStore(path, "local:model-a"))
    assert np.allclose(second.get([old]), before) and counting.calls == []
    # A changed document brings new sentences: embedded afresh, never the old vector.
    new = "The ferry leaves the harbour at eight."
    got = second.get([new])
    assert counting.calls == [[new]]
    assert np.allclose(got[0], np.asarray(embed_model.get_text_embedding(new)), atol=1e-5)


def test_a_damaged_or_foreign_file_is_set_aside_and_rebuilt(embed_model, tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = SentenceStore(path, "model-a")
    vectors = SentenceVectors(Counting(embed_model), store=store)
    vectors.get(["The lemon cake needs four eggs."])
    assert store.count() == 1
    assert list(tmp_path.glob("s.sqlite.damaged-*"))
    store.close()
    # Vectors of one model are never read as another's.
    other = SentenceStore(path, "model-b")
    assert other.count() == 0


def test_damaged_pages_are_misses_not_failures(embed_model, tmp_path):
    path = tmp_path / "s.sqlite"
    store = SentenceStore(path, "model-a")
    store.put({f"filler sentence {i}": np.full(384, i, np.float32) for i in range(2000)})
    store.close()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = b"\xff" * 8192  # pages in the middle of the file
    path.write_bytes(bytes(data))
    counting = Counting(embed_model)
    vectors = SentenceVectors(counting, store=SentenceStore(path, "model-a"))
    sentences = [f"filler sentence {i}" for i in range(0, 2000, 7)]
    got = vectors.get(sentences)  # read errors are misses: embedded again, never raised
    assert got.shape == (len(sentences), 384)


CRASH_WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from rag.sentencestore import SentenceStore
store = SentenceStore(__import__("pathlib").Path({path!r}), "model-a")
i = 0
while True:
    batch = {{f"sentence {{i}}-{{j}}": np.full(384, i, np.float32) for j in range(50)}}
    store.put(batch)
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_midway_leaves_whole_batches(tmp_path):
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER.format(root=str(ROOT), path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(20):  # let it commit a few batches, then kill it mid-write
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    store = SentenceStore(path, "model-a")
    n = store.count()
    assert n >= 20 * 50 and n % 50 == 0  # only whole batches
    last = n // 50 - 1
    got = store.get([f"sentence {last}-{j}" for j in range(50)])
    assert len(got) == 50 and all(np.all(v == last) for v in got.values())


@pytest.mark.slow
def test_answers_after_change_and_prune_quote_the_current_text(tmp_path, embed_model, embed_id):
    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from ingest import ingest_paths
    from rag.live import EmbeddingCache, build_pipeline
    from rag.prompt import system_prompt

    settings = Settings(data_dir=tmp_path / "data")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferry.md").write_text("# Ferry\n\nThe ferry leaves the harbour at seven every day.\n")
    (docs / "cake.md").write_text("# Cake\n\nThe lemon cake needs exactly four eggs.\n")
    client = chroma_client(settings)
    col = open_collection(client, settings.chroma.collection, embed_id, create=True)
    ingest_paths(settings, col, embed_model, paths=[docs], progress=False)
    cache = EmbeddingCache()
    cache.put(settings, embed_model)
    prompt = system_prompt(settings)

    def ask(question: str) -> str:
        pipe = build_pipeline(settings, None, None, None, prompt, cache)
        return list(pipe.ask("s", question))[-1].text

    assert "at seven" in ask("When does the ferry leave?")
    (docs / "ferry.md").write_text("# Ferry\n\nThe ferry leaves the harbour at nine every day.\n")
    ingest_paths(settings, col, embed_model, paths=[docs], progress=False)
    answer = ask("When does the ferry leave?")
    assert "at nine" in answer and "at seven" not in answer
    (docs / "ferry.md").unlink()
    ingest_paths(settings, col, embed_model, paths=[docs], prune=True, progress=False)
    assert "ferry" not in ask("When does the ferry leave?").lower()
    assert store_path(settings.data_dir, embed_id).exists()
