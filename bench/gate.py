"""Offline evaluation on the 887 SciQ validation rows (supports as the corpus, the extractive
provider): samples/s and the metric table; then two gate runs on the same set: the default
configuration against a deliberately degraded one (retrieval top-k 1, which must be rejected),
and the default against itself (which must not be promoted).

    flock /tmp/heavy.lock .venv/bin/python bench/gate.py [--csv ../shared/data/sciq/validation.csv]

The last line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from core.offline import stay_offline

ROOT = Path(__file__).resolve().parent.parent
stay_offline()
os.environ.pop("OPENAI_API_KEY", None)  # offline: the extractive provider, no judge


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=ROOT.parent / "shared/data/sciq/validation.csv")
    p.add_argument("--limit", type=int, help="only the first N rows (a quick look)")
    args = p.parse_args()
    if not args.csv.is_file():
        print(f"no SciQ data at {args.csv}", file=sys.stderr)
        return 2

    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from eval.gate import compare_runs, decide_promotion
    from eval.runner import EvalContext, decide, policy_from, run_eval
    from eval.sets import from_dataset
    from ingest import RecordFields, ingest_paths

    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    settings = Settings(data_dir=work / "data")
    settings.llm.provider = "extractive"
    ctx = EvalContext.open(settings)
    embed_model = ctx.embeddings.get(settings)
    from core.embedding.providers import embedding_id

    collection = open_collection(
        chroma_client(settings), settings.chroma.collection, embedding_id(settings.embedding)
    )
    started = time.perf_counter()
    report = ingest_paths(
        settings,
        collection,
        embed_model,
        datasets=[str(args.csv)],
        fields=RecordFields(text_field="support"),
        progress=False,
    )
    print(f"corpus: {report.summary()} in {time.perf_counter() - started:.1f} s")

    samples = from_dataset(str(args.csv), limit=args.limit)
    set_id = ctx.save_set(f"sciq validation ({len(samples)})", samples)

    champion = run_eval(ctx, set_id, progress=True)
    seconds = champion.duration_s
    print(f"\nscored {len(samples)} samples in {seconds:.1f} s ({len(samples) / seconds:.1f}/s)")
    print(f"{'metric':28} {'mean':>7} {'measured':>9} {'NaN':>5}")
    for name, m in sorted(champion.summary.items()):
        mean = "n/a" if m.mean is None else f"{m.mean:.3f}"
        print(f"{name:28} {mean:>7} {m.measured:>9} {m.nan:>5}")
    nan = sum(m.nan for m in champion.summary.values())

    policy = policy_from(settings.eval)
    seed = ctx.registry.active("chat")
    worse = ctx.registry.register(
        "chat", "degraded: top-k 1", {"retrieval": {"top_k": 1}}, parent_id=seed.id
    )
    same = ctx.registry.register("chat", "the default again", {}, parent_id=seed.id)
    results = {}
    for candidate in (worse, same):
        run = run_eval(ctx, set_id, chat_id=candidate.id, progress=True)
        decision = decide(ctx, champion, run, candidate.id, policy)
        results[candidate.id] = decision
        print(f"\n{candidate.name}: {'PROMOTE' if decision.promote else 'REJECT'}")
        for reason in decision.reasons:
            print(f"  {reason}")
    # The gate is deterministic: the same runs give the same decision (seeded bootstrap).
    again = decide_promotion(
        compare_runs(ctx.store.samples(champion.id), ctx.store.samples(run.id), policy), policy
    )
    assert again[0] == results[same.id].promote

    rejects_worse = int(not results[worse.id].promote)
    promotes_self = int(results[same.id].promote)
    print(
        f"samples={len(samples)} seconds={seconds:.1f} nan={nan} rejects_worse={rejects_worse} "
        f"promotes_self={promotes_self}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
