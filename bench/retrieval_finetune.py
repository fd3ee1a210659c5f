"""Embedding fine-tuning on the published benchmark (run-llama/finetune-embedding): train on
`train_dataset.json` (Lyft 10-K questions) only, evaluate on `val_dataset.json` (Uber 10-K) by
retrieving over the val corpus; the untouched model is measured in the same run as the baseline.

    .venv/bin/python bench/retrieval_finetune.py [--loss cached-symmetric] [--epochs 2] ...

Prints base and fine-tuned hit@1/5/10 and MRR@10 beside the published numbers, the training
seconds on this machine, and a last line of key=value figures."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "finetune-embedding"

# ../shared/data/SOURCES.md: published results on val_dataset.json.
PUBLISHED = [
    ("bge-small-en base (published)", 0.509, 0.729, 0.814, 0.609),
    ("bge-small-en fine-tuned (published)", 0.608, 0.848, 0.895, 0.708),
    ("ada-002 (published, hit@5 only)", None, 0.871, None, None),
]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--loss", default="gist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mini-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-len", type=int, default=256, help="word pieces read in training")
    p.add_argument("--eval-len", type=int, default=512, help="word pieces read in evaluation")
    p.add_argument(
        "--negatives",
        type=int,
        default=0,
        help="mined hard negatives per query (1: +0.017 hit@5 here; twice the texts per step)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, help="subsample training queries (exploration)")
    p.add_argument("--limit-val", type=int, help="subsample val queries (exploration)")
    p.add_argument("--adapter", action="store_true", help="also train and score a query adapter")
    return p.parse_args()


def _row(name: str, m: dict) -> str:
    def f(key: str) -> str:
        v = m.get(key)
        return "  -  " if v is None else f"{v:.3f}"

    return f"{name:56} {f('hit_at_1')}  {f('hit_at_5')}  {f('hit_at_10')}  {f('mrr_at_10')}"


def main() -> int:
    args = _args()
    if not (args.data / "train_dataset.json").is_file():
        print(f"missing {args.data}/train_dataset.json (see ../shared/data/SOURCES.md)")
        return 2
    from core.embedding.window import packaged_model_dir
    from finetune.embedding.data import load_llamaindex, mine_negatives
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import TrainConfig, load_model, train_model

    train = load_llamaindex(args.data / "train_dataset.json")
    val = load_llamaindex(args.data / "val_dataset.json")
    rng = random.Random(args.seed)
    if args.limit_train:
        train = train.subset(rng.sample(sorted(train.queries), args.limit_train))
    if args.limit_val:
        val = val.subset(rng.sample(sorted(val.queries), args.limit_val))
    base_dir = packaged_model_dir()
    print(
        f"train {len(train)} queries / {len(train.corpus)} chunks; "
        f"val {len(val)} queries / {len(val.corpus)} chunks"
    )

    base = load_model(base_dir)
    window = base.max_seq_length
    base_m = evaluate_model(val, base)
    base.max_seq_length = args.eval_len
    base_long = evaluate_model(val, base) if args.eval_len != window else base_m
    base.max_seq_length = args.max_len

    started = time.perf_counter()
    counts = mine_negatives(train, base, num_negatives=args.negatives) if args.negatives else {}
    mine_s = time.perf_counter() - started
    cfg = TrainConfig(
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        learning_rate=args.lr,
        max_seq_length=args.max_len,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(base_dir, train, Path(tmp) / "model", cfg, progress=True)
        tuned = load_model(result.model_dir, args.max_len)
        ft_train_len = evaluate_model(val, tuned)
        tuned.max_seq_length = args.eval_len
        ft_m = evaluate_model(val, tuned) if args.eval_len != args.max_len else ft_train_len
    train_s = result.seconds + mine_s

    adapter_m = None
    if args.adapter:
        from finetune.embedding.adapter import AdapterConfig, train_adapter

        base.max_seq_length = args.eval_len
        adapter, _ = train_adapter(base, train, AdapterConfig(seed=args.seed), progress=False)
        adapter_m = evaluate_model(val, base, adapter=adapter)

    print()
    print(f"{'val_dataset.json (' + str(len(val)) + ' questions)':56} hit@1  hit@5  hit@10 MRR@10")
    print(_row(f"MiniLM-L6 base @{window}", base_m))
    if args.eval_len != window:
        print(_row(f"MiniLM-L6 base @{args.eval_len}", base_long))
    tuned_name = f"MiniLM-L6 fine-tuned ({args.loss}, trained @{args.max_len})"
    if args.eval_len != args.max_len:
        print(_row(f"{tuned_name} @{args.max_len}", ft_train_len))
    print(_row(f"{tuned_name} @{args.eval_len}", ft_m))
    if adapter_m:
        print(_row(f"MiniLM-L6 base + query adapter @{args.eval_len}", adapter_m))
    for name, h1, h5, h10, mrr in PUBLISHED:
        print(_row(name, {"hit_at_1": h1, "hit_at_5": h5, "hit_at_10": h10, "mrr_at_10": mrr}))
    print(
        f"\nnegatives {counts}; {result.steps} steps; training {result.seconds:.0f} s "
        f"+ mining {mine_s:.0f} s; hit@5 ratio ft/base {ft_m['hit_at_5'] / base_m['hit_at_5']:.3f} "
        f"(same window: {ft_m['hit_at_5'] / base_long['hit_at_5']:.3f})"
    )
    print(
        f"base_hit5={base_m['hit_at_5']:.3f} ft_hit5={ft_m['hit_at_5']:.3f} "
        f"ft_mrr10={ft_m['mrr_at_10']:.3f} train_s={train_s:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
