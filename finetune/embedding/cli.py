"""`python -m finetune.embedding build|train|adapter|evaluate`: training pairs from the chat log and
the corpus, a fine-tuned embedding model or a query adapter registered as a candidate `embedding`
version, and held-out retrieval figures of champion against candidate; one-line summaries."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.db.database import open_database
from core.errors import RagError
from core.index.store import index_embedding

if TYPE_CHECKING:
    from core.openai_api import ModelClient
    from core.records import DatasetCard
    from core.registry import ModelVersion, Registry
    from core.settings import Settings
    from finetune.embedding.data import PairSet


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.embedding", description=__doc__)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="training pairs (+ mined hard negatives) and a dataset card")
    b.add_argument("--name", help="dataset name (default: a timestamp)")
    b.add_argument("--chatlog", action="store_true", help="rated-up turns -> the chunks cited")
    b.add_argument("--since", help="--chatlog: only turns at or after this ISO date")
    b.add_argument(
        "--teacher",
        action="store_true",
        help="--chatlog: also unrated turns the chat LLM grades 4/5 or more for their passages",
    )
    b.add_argument("--headings", action="store_true", help="headings and titles -> their section")
    b.add_argument("--cloze", action="store_true", help="inverse cloze: sentence -> its chunk")
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
    t.add_argument("dataset", help="dataset name or directory (from `build`)")
    t.add_argument("--loss", default="symmetric", help="mnrl|symmetric|cached|cached-symmetric")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--mini-batch-size", type=int, default=16, help="CachedMNRL forward size")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--max-seq-length", type=int, help="word pieces (default: the model's)")
    t.add_argument("--holdout", type=float, default=0.2, help="share of questions held out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-register", action="store_true", help="train and score only")

    a = sub.add_parser("adapter", help="train a linear query adapter; register a candidate")
    a.add_argument("dataset", help="dataset name or directory (from `build`)")
    a.add_argument("--epochs", type=int, default=20)
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--holdout", type=float, default=0.2, help="share of questions held out")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-register", action="store_true", help="train and score only")

    e = sub.add_parser("evaluate", help="held-out retrieval: active version vs a candidate")
    e.add_argument("candidate", type=int, help="embedding version id")
    e.add_argument("--file", type=Path, help="LlamaIndex JSON (default: the candidate's hold-out)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 on an error, with what to do)."""
    from core.cli import run_command

    return run_command(_parser(), COMMANDS, argv)


# -- helpers -----------------------------------------------------------------------------------


def _root(settings: Settings) -> Path:
    return settings.data_dir / "finetune" / "embedding"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _registry(settings: Settings) -> Registry:
    from core.registry import Registry

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(open_database(settings.database_url))
    registry.seed(settings)
    return registry


def _active(settings: Settings, registry: Registry) -> tuple[ModelVersion | None, Settings]:
    from core.registry import apply_spec

    active = registry.active("embedding")
    return active, apply_spec(settings, active)


def _model_dir(applied: Settings) -> Path:
    """The local sentence-transformers directory of the active embedding model."""
    from core.embedding.window import packaged_model_dir

    cfg = applied.embedding
    if cfg.provider != "local":
        raise RagError(
            f"the active embedding model is `{cfg.provider}`; fine-tuning needs a local "
            "sentence-transformers model (RAG_EMBEDDING__PROVIDER=local)"
        )
    return Path(cfg.model) if cfg.model else packaged_model_dir()


def _dataset_dir(settings: Settings, name: str) -> Path:
    path = Path(name)
    return path if path.is_dir() else _root(settings) / "datasets" / name


def _summary(m: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in m.items())


# -- commands ----------------------------------------------------------------------------------


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    from collections import Counter

    from core.dates import parse_since
    from core.embedding.providers import embedding_id
    from core.index.store import chroma_client, open_collection
    from finetune.embedding import data as d
    from finetune.embedding.train import load_model

    registry = _registry(settings)
    _, applied = _active(settings, registry)
    chosen = args.chatlog or args.headings or args.cloze or args.generate or args.dataset
    if not chosen and not args.file:
        args.chatlog = args.headings = True  # what needs no flags and measures well
    needs_index = args.chatlog or args.headings or args.cloze or args.generate
    collection = None
    if needs_index:
        chroma = chroma_client(applied)
        collection = open_collection(
            chroma,
            applied.chroma.collection,
            embedding_id(index_embedding(applied, chroma)),
            create=False,
        )
    pairs, skipped, inputs = d.PairSet(), Counter[str](), {}
    if args.chatlog:
        from core.chatlog import ChatLog

        teacher = d.openai_teacher(_llm(settings)) if args.teacher else None
        chatlog = ChatLog(open_database(settings.database_url))
        got, why = d.from_chatlog(chatlog, collection, parse_since(args.since), teacher)
        pairs, skipped = pairs.merge(got), skipped + why
        inputs["chatlog"] = {"since": args.since, "turn_ids": _turn_range(got)}
    if args.headings:
        pairs = pairs.merge(d.from_headings(collection))
    if args.cloze:
        pairs = pairs.merge(d.from_inverse_cloze(collection, seed=args.seed))
    if args.generate:
        got, reasons = d.generate_pairs(
            collection, _llm(settings), size=args.generate, seed=args.seed,
            progress=not args.no_progress,
        )  # fmt: skip
        pairs = pairs.merge(got)
        if reasons:
            skipped["malformed LLM replies"] += len(reasons)
    if args.dataset:
        pairs = pairs.merge(
            d.from_dataset(
                args.dataset, args.question_field, args.text_field, args.split, args.limit
            )
        )
        inputs["dataset"] = args.dataset
    for path in args.file:
        pairs = pairs.merge(d.load_llamaindex(path))
        inputs.setdefault("files", []).append(_file_hash(path))
    if collection is not None:
        inputs["collection"] = {"name": collection.name, "chunks": collection.count()}
    negatives: dict[str, int] = {}
    if args.negatives and len(pairs):
        model = load_model(_model_dir(applied), _window(applied))
        negatives = d.mine_negatives(pairs, model, num_negatives=args.negatives, seed=args.seed)
    name = args.name or f"pairs-{_stamp()}"
    card = d.write_dataset(
        pairs,
        _root(settings) / "datasets" / name,
        name,
        skipped=dict(skipped),
        negatives=negatives,
        inputs=inputs,
        settings={"negatives": args.negatives, "seed": args.seed},
    )
    by = ", ".join(f"{k} {v}" for k, v in sorted(card.by_source.items()))
    skip = ", ".join(f"{v} {k}" for k, v in card.dropped.items()) or "none"
    print(
        f"dataset {name}: {card.pairs} pairs ({by}); skipped: {skip}; negatives {negatives or 0}; "
        f"card {card.card_hash()[:12]}"
    )
    return 0


def _turn_range(data: PairSet) -> list[int]:
    ids = [int(q.split(":")[1]) for q in data.queries if q.startswith(("chatlog:", "teacher:"))]
    return [min(ids), max(ids)] if ids else []


def _file_hash(path: Path) -> dict[str, str]:
    import hashlib

    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _llm(settings: Settings) -> ModelClient:
    """The configured chat LLM's client and model, which write and grade questions."""
    from core.openai_api import connect

    return connect(settings.llm)


def _split(data: PairSet, share: float, seed: int) -> tuple[PairSet, PairSet | None]:
    from finetune.embedding.evaluate import holdout_split

    if share <= 0 or len(data) < 10:
        return data, None
    train_ids, held_ids = holdout_split(data, share, seed)
    return data.subset(train_ids), data.subset(held_ids)


def _provenance(card: DatasetCard, train: PairSet, base: str, extra: dict) -> dict:
    from core.questions import question_key

    return {
        "dataset": card.name,
        "dataset_card_sha256": card.card_hash(),
        "dataset_data_sha256": card.content_hash,
        "base_model": base,
        # Only the questions it trained on; the held-out ones may judge it.
        "train_question_keys": sorted({question_key(q) for q in train.queries.values()}),
        **extra,
    }


def _write_heldout(held: PairSet | None, directory: Path) -> Path | None:
    """The held-out questions as an eval set (Ragas fields) and in the LlamaIndex layout."""
    if held is None:
        return None
    from finetune.embedding.data import save_llamaindex

    save_llamaindex(held, directory / "heldout.json")
    path = directory / "heldout.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for qid, question in held.queries.items():
            contexts = [held.corpus[d] for d in held.relevant_docs[qid]]
            fh.write(json.dumps({"user_input": question, "reference_contexts": contexts}) + "\n")
    return path


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from core.embedding.providers import embedding_id
    from finetune.embedding.data import read_dataset
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import TrainConfig, load_model, train_model

    registry = _registry(settings)
    active, applied = _active(settings, registry)
    data, card = read_dataset(_dataset_dir(settings, args.dataset))
    train, held = _split(data, args.holdout, args.seed)
    base_dir = _model_dir(applied)
    cfg = TrainConfig(
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        learning_rate=args.lr,
        max_seq_length=args.max_seq_length or applied.embedding.max_seq_length,
        seed=args.seed,
    )
    stamp = _stamp()
    out = _root(settings) / "models" / f"embedding-{stamp}"
    result = train_model(base_dir, train, out, cfg, progress=not args.no_progress)
    metrics: dict[str, Any] = {}
    if held is not None:
        # Both read as the app will read them: at the active model's window (or the one asked).
        read = args.max_seq_length or _window(applied)
        metrics["base"] = evaluate_model(held, load_model(base_dir, read))
        metrics["candidate"] = evaluate_model(held, load_model(out, read))
    heldout = _write_heldout(held, out)
    line = f"trained {result.steps} steps in {result.seconds:.0f} s -> {out}"
    if metrics:
        line += (
            f"; held-out ({len(held)}) mrr_at_10 {metrics['base']['mrr_at_10']:.3f} -> "
            f"{metrics['candidate']['mrr_at_10']:.3f}, hit_at_5 {metrics['base']['hit_at_5']:.3f}"
            f" -> {metrics['candidate']['hit_at_5']:.3f}"
        )
    if args.no_register:
        print(line)
        return 0
    collection = f"{applied.chroma.collection}-ft-{stamp}".lower()[:60]
    spec = {
        "embedding": {
            "provider": "local",
            "model": str(out.resolve()),
            "max_seq_length": args.max_seq_length or _window(applied),
            "backend": "torch",
            "query_adapter": None,
        },
        "chroma": {"collection": collection},
    }
    version = registry.register(
        "embedding",
        f"fine-tuned on {card.name} ({args.loss}, {args.epochs} ep)",
        spec,
        parent_id=active.id if active else None,
        provenance=_provenance(
            card,
            train,
            embedding_id(index_embedding(applied)),
            {"train": result.config, "seconds": result.seconds, "heldout": metrics},
        ),
    )
    print(line)
    print(_next_steps(version.id, heldout))
    return 0


def _next_steps(version_id: int, heldout: Path | None) -> str:
    judge = f"--set {heldout}" if heldout else "--set YOUR_SET.jsonl"
    return (
        f"registered embedding v{version_id} as a candidate; judge it with "
        f"`RAG_EVAL__PRIMARY_METRIC=mrr_at_10 python -m eval compare --candidate {version_id} "
        f"{judge}` (re-embeds into its own collection first)"
    )


def cmd_adapter(settings: Settings, args: argparse.Namespace) -> int:
    from core.embedding.providers import embedding_id
    from finetune.embedding.adapter import AdapterConfig, save_adapter, train_adapter
    from finetune.embedding.data import read_dataset
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import load_model

    registry = _registry(settings)
    active, applied = _active(settings, registry)
    data, card = read_dataset(_dataset_dir(settings, args.dataset))
    train, held = _split(data, args.holdout, args.seed)
    model = load_model(_model_dir(applied), _window(applied))
    cfg = AdapterConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    adapter, curve = train_adapter(model, train, cfg, progress=not args.no_progress)
    out = _root(settings) / "adapters" / f"adapter-{_stamp()}"
    base_id = embedding_id(index_embedding(applied))
    save_adapter(adapter, curve, out, base_id)
    metrics: dict[str, Any] = {}
    if held is not None:
        metrics["base"] = evaluate_model(held, model)
        metrics["candidate"] = evaluate_model(held, model, adapter=adapter)
    heldout = _write_heldout(held, out)
    line = f"trained a query adapter ({cfg.epochs} epochs) -> {out}"
    if metrics:
        line += (
            f"; held-out ({len(held)}) mrr_at_10 {metrics['base']['mrr_at_10']:.3f} -> "
            f"{metrics['candidate']['mrr_at_10']:.3f}"
        )
    if args.no_register:
        print(line)
        return 0
    # The adapter reads the active collection as it is: no re-embedding, instant promotion.
    spec = {"embedding": {**_embedding_spec(applied), "query_adapter": str(out.resolve())}}
    version = registry.register(
        "embedding",
        f"query adapter on {card.name}",
        spec,
        parent_id=active.id if active else None,
        provenance=_provenance(card, train, base_id, {"adapter": adapter.meta, "heldout": metrics}),
    )
    print(line)
    print(_next_steps(version.id, heldout))
    return 0


def _window(applied: Settings) -> int | None:
    """The window the app reads the local model at (512 for the packaged one by default)."""
    from core.embedding.window import window_of

    if applied.embedding.provider != "local":
        return applied.embedding.max_seq_length
    return window_of(applied.embedding)


def _embedding_spec(applied: Settings) -> dict[str, Any]:
    cfg = applied.embedding
    return {
        "provider": cfg.provider,
        "model": cfg.model,
        "max_seq_length": cfg.max_seq_length,
        "backend": cfg.backend,
    }


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from core.embedding.adapter import load_adapter
    from core.registry import RegistryError, apply_spec
    from finetune.embedding.data import load_llamaindex
    from finetune.embedding.evaluate import evaluate_model

    registry = _registry(settings)
    active, applied = _active(settings, registry)
    candidate = registry.get(args.candidate)
    if candidate.kind != "embedding":
        raise RegistryError(f"{candidate.label} is not an embedding version")
    path = args.file
    if path is None:
        found = candidate.spec.get("embedding", {})
        folder = found.get("query_adapter") or found.get("model")
        path = Path(folder) / "heldout.json" if folder else None
    if path is None or not Path(path).is_file():
        raise RagError(f"no held-out set for {candidate.label}; pass --file QUESTIONS.json")
    data = load_llamaindex(Path(path))
    rows = {}
    from finetune.embedding.train import load_model

    for label, cfg in (
        (f"champion {active.label if active else ''}", applied),
        (f"candidate {candidate.label}", apply_spec(settings, candidate)),
    ):
        model = load_model(_model_dir(cfg), _window(cfg))
        adapter = cfg.embedding.query_adapter
        rows[label] = evaluate_model(
            data, model, adapter=load_adapter(Path(adapter)) if adapter else None
        )
        print(f"{label}: {_summary(rows[label])}")
    champ, cand = rows.values()
    delta = cand["mrr_at_10"] - champ["mrr_at_10"]
    print(
        f"{len(data)} held-out questions: mrr_at_10 {champ['mrr_at_10']:.3f} -> "
        f"{cand['mrr_at_10']:.3f} ({delta:+.3f}); the promotion gate decides: "
        f"python -m eval compare --candidate {candidate.id} --set ..."
    )
    return 0


COMMANDS = {
    "build": cmd_build,
    "train": cmd_train,
    "adapter": cmd_adapter,
    "evaluate": cmd_evaluate,
}
