"""One function per embedding fine-tuning admin action, called alike by the command line
(`python -m finetune embed`) and the Fine-tune tab: build training pairs (recorded with their card
in the job store), train a candidate as a job (progress, loss per step, cancel, resume after a
restart), train a query adapter, and show a candidate's held-out figures. A trained model is
registered on the backend and window the active model is served with, so the gate compares the
fine-tuning alone and its re-embed costs what an ingest costs."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import RagError

if TYPE_CHECKING:
    from core.jobstore import DatasetRecord
    from core.records import DatasetCard
    from core.registry import ModelVersion
    from core.settings import Settings
    from finetune.context import FineTuneContext
    from finetune.embedding.data import PairSet

log = logging.getLogger(__name__)

DIAGNOSTIC = (
    "held-out pairs made by the same recipe as the training pairs: a training diagnostic, not "
    "evidence; the gate judges a candidate on questions its recipe did not make"
)


def embedding_root(settings: Settings) -> Path:
    return settings.finetune_dir / "embedding"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def active_embedding(ctx: FineTuneContext) -> tuple[ModelVersion | None, Settings]:
    """The active embedding version and the settings it runs with."""
    from core.registry import apply_spec

    ctx.registry.seed(ctx.settings)
    active = ctx.registry.active("embedding")
    return active, apply_spec(ctx.settings, active)


def model_dir(applied: Settings) -> Path:
    """The local sentence-transformers folder of the embedding model these settings run."""
    from core.embedding.window import packaged_model_dir

    cfg = applied.embedding
    if cfg.provider != "local":
        raise RagError(
            f"the active embedding model runs on `{cfg.provider}`; fine-tuning needs a local "
            "sentence-transformers model (RAG_EMBEDDING__PROVIDER=local)"
        )
    return Path(cfg.model) if cfg.model else packaged_model_dir()


def read_window(applied: Settings) -> int | None:
    """The window the app reads the local model at (512 for the packaged one by default)."""
    from core.embedding.window import window_of

    if applied.embedding.provider != "local":
        return applied.embedding.max_seq_length
    return window_of(applied.embedding)


def _collection(applied: Settings):
    from core.embedding.providers import embedding_id
    from core.index.store import chroma_client, index_embedding, open_collection

    chroma = chroma_client(applied)
    return open_collection(
        chroma,
        applied.chroma.collection,
        embedding_id(index_embedding(applied, chroma)),
        create=False,
    )


# -- training pairs ----------------------------------------------------------------------------


@dataclass
class PairsRequest:
    """Which sources make training pairs; with none chosen, the chat log."""

    name: str | None = None
    chatlog: bool = False  # rated-up turns -> the chunks their answers cited
    since: datetime | None = None
    teacher: bool = False  # chatlog: unrated turns the chat LLM grades 4/5 or more too
    headings: bool = False  # corpus only: heading -> the first chunk under it
    cloze: bool = False  # corpus only: a sentence -> its chunk
    cloze_per_chunk: int = 1
    generate: int | None = None  # questions the chat LLM writes for N chunks
    dataset: str | None = None
    question_field: str = "question"
    text_field: str = "support"
    split: str | None = None
    limit: int | None = None
    files: list[Path] = field(default_factory=list)  # LlamaIndex JSON
    negatives: int = 1
    seed: int = 0

    def sources(self) -> list[str]:
        chosen = [
            name
            for name, on in (
                ("chatlog", self.chatlog),
                ("headings", self.headings),
                ("cloze", self.cloze),
                ("generated", bool(self.generate)),
                ("dataset", bool(self.dataset)),
                ("file", bool(self.files)),
            )
            if on
        ]
        return chosen or ["chatlog"]


@dataclass
class BuiltPairs:
    record: DatasetRecord
    card: DatasetCard
    path: Path

    def summary(self) -> str:
        card = self.card
        by = ", ".join(f"{k} {v}" for k, v in sorted(card.by_source.items()))
        skip = ", ".join(f"{v} {k}" for k, v in card.dropped.items()) or "none"
        negatives = ", ".join(f"{k} {v}" for k, v in card.negatives.items()) or "none"
        return (
            f"dataset {self.record.id} {card.name!r}: {card.pairs} pairs ({by}); skipped: {skip}; "
            f"negatives: {negatives}; card {card.card_hash()[:12]}"
        )


def build_pairs(
    ctx: FineTuneContext,
    request: PairsRequest,
    progress: bool = False,
) -> BuiltPairs:
    """Training pairs (question -> passages, with mined hard negatives) from the sources the
    request names, written with their card and recorded in the job store."""
    from core.chatlog import ChatLog
    from finetune.embedding import data as d
    from finetune.embedding.train import load_model

    _, applied = active_embedding(ctx)
    sources = request.sources()
    collection = None
    if {"chatlog", "headings", "cloze", "generated"} & set(sources):
        collection = _collection(applied)
    pairs, skipped, inputs = d.PairSet(), Counter[str](), {}
    if "chatlog" in sources:
        teacher = d.openai_teacher(_chat_llm(ctx.settings)) if request.teacher else None
        got, why = d.from_chatlog(ChatLog(ctx.store.db), collection, request.since, teacher)
        pairs, skipped = pairs.merge(got), skipped + why
        inputs["chatlog"] = {
            "since": request.since.isoformat() if request.since else None,
            "turn_ids": _turn_range(got),
        }
    if "headings" in sources:
        pairs = pairs.merge(d.from_headings(collection))
    if "cloze" in sources:
        cloze = d.from_inverse_cloze(collection, request.cloze_per_chunk, seed=request.seed)
        pairs = pairs.merge(cloze)
    if "generated" in sources:
        llm = _chat_llm(ctx.settings)
        got, reasons = d.generate_pairs(
            collection, llm, size=request.generate or 0, seed=request.seed, progress=progress
        )
        pairs = pairs.merge(got)
        inputs["generator"] = llm.model
        if reasons:
            skipped["malformed LLM replies"] += len(reasons)
    if "dataset" in sources:
        pairs = pairs.merge(
            d.from_dataset(
                request.dataset,
                request.question_field,
                request.text_field,
                request.split,
                request.limit,
            )
        )
        inputs["dataset"] = request.dataset
    for path in request.files:
        pairs = pairs.merge(d.load_llamaindex(Path(path)))
        inputs.setdefault("files", []).append(_file_hash(Path(path)))
    if collection is not None:
        inputs["collection"] = {"name": collection.name, "chunks": collection.count()}
    if not len(pairs):
        raise RagError(
            "no training pairs: rate some answers up in the chat (their cited passages are the "
            "pairs), or choose another source"
            + (f" ({', '.join(f'{v} {k}' for k, v in skipped.items())})" if skipped else "")
        )
    negatives: dict[str, int] = {}
    # Mined as the app retrieves (keywords and meaning fused, at its keyword share), so the
    # negatives are the passages the served retrieval confuses with the right one; by the
    # cosine alone where the app does not fuse by weighted scores (no hybrid search, or RRF).
    retrieval = ctx.settings.retrieval
    weighted = retrieval.hybrid and retrieval.fusion == "weighted"
    lexical = retrieval.lexical_weight if weighted else 0.0
    distinct = len(set(pairs.corpus.values()))
    if request.negatives and distinct < request.negatives + 2:
        raise RagError(
            f"only {distinct} distinct passage(s) among the pairs: too few to give each question "
            f"{request.negatives} hard negative(s) (other passages it must learn to tell apart). "
            "Rate more answers up, add a corpus source such as headings, or use 0 hard negatives"
        )
    if request.negatives:
        model = load_model(model_dir(applied), read_window(applied))
        negatives = d.mine_negatives(
            pairs, model, num_negatives=request.negatives, seed=request.seed, lexical_weight=lexical
        )
    name = (request.name or "").strip() or f"pairs-{stamp()}"
    folder = embedding_root(ctx.settings) / "datasets" / name
    if folder.exists():
        raise RagError(f"a dataset named {name!r} exists already; choose another name")
    card = d.write_dataset(
        pairs,
        folder,
        name,
        skipped=dict(skipped),
        negatives=negatives,
        inputs=inputs,
        settings={
            "negatives": request.negatives,
            "seed": request.seed,
            "sources": sources,
            # The keyword share of the ranking the negatives were mined from (0: meaning only).
            "mined_lexical_weight": lexical if request.negatives else None,
        },
    )
    card.files = {"pairs": "pairs.json"}
    record = ctx.store.save_dataset(card, str(folder))
    return BuiltPairs(record, card, folder)


def _turn_range(data: PairSet) -> list[int]:
    ids = [int(q.split(":")[1]) for q in data.queries if q.startswith(("chatlog:", "teacher:"))]
    return [min(ids), max(ids)] if ids else []


def _file_hash(path: Path) -> dict[str, str]:
    import hashlib

    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _chat_llm(settings: Settings):
    """The configured chat LLM, which writes and grades questions."""
    from core.openai_api import connect

    if not settings.llm.configured:
        raise RagError(
            "writing or grading questions needs a chat LLM: set OPENAI_API_KEY or "
            "RAG_LLM__BASE_URL, or choose sources that need none (the chat log, a dataset, files)"
        )
    return connect(settings.llm)


def pairs_dataset(ctx: FineTuneContext, dataset: int | str) -> DatasetRecord:
    """A stored pairs dataset, by id or by name."""
    if isinstance(dataset, int) or str(dataset).isdigit():
        record = ctx.store.dataset(int(dataset))
    else:
        found = [r for r in ctx.store.datasets(limit=1000) if r.name == dataset]
        if not found:
            raise RagError(f"no dataset named {dataset!r}; build training pairs first")
        record = found[0]
    if record.card.kind != "embedding":
        raise RagError(
            f"dataset {record.id} ({record.name}) holds chat examples, not embedding pairs"
        )
    return record


# -- shared by training and the adapter ----------------------------------------------------


def split_pairs(data: PairSet, share: float, seed: int) -> tuple[PairSet, PairSet | None]:
    """(training pairs, held-out pairs) by question; none held out from small sets."""
    from finetune.embedding.evaluate import holdout_split

    if share <= 0 or len(data) < 10:
        return data, None
    train_ids, held_ids = holdout_split(data, share, seed)
    return data.subset(train_ids), data.subset(held_ids)


def held_out_figures(held: PairSet, base: Path, candidate: Path, window: int | None) -> dict:
    """hit@k/MRR/NDCG of the base model and the candidate on held-out pairs, both read as the
    app reads them (at `window`): a training diagnostic."""
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import load_model

    return {
        "base": evaluate_model(held, load_model(base, window)),
        "candidate": evaluate_model(held, load_model(candidate, window)),
        "note": DIAGNOSTIC,
    }


def write_heldout(held: PairSet | None, directory: Path) -> None:
    """The held-out pairs beside the model (LlamaIndex layout), for diagnostics only."""
    if held is None:
        return
    from finetune.embedding.data import save_llamaindex

    save_llamaindex(held, directory / "heldout.json")


# Pair sources whose questions people asked (rated chat turns; a teacher picks only the passage).
PEOPLES_QUESTIONS = frozenset({"chatlog", "teacher"})


def provenance_of(
    card: DatasetCard,
    train: PairSet,
    base: str,
    extra: dict[str, Any],
    held: PairSet | None = None,
) -> dict[str, Any]:
    """What a candidate trained on: the card, the base, the recipe (which sources made its
    pairs) and the keys of its training questions (kept out of the sets that judge it)."""
    from core.questions import question_key

    return {
        "dataset": card.name,
        "dataset_card_sha256": card.card_hash(),
        "dataset_data_sha256": card.content_hash,
        "base_model": base,
        "recipe": sorted(card.by_source),
        "generator": card.inputs.get("generator"),
        # Only the questions it trained on (kept out of every set that judges it).
        "train_question_keys": sorted({question_key(q) for q in train.queries.values()}),
        # The held-out questions a recipe wrote (from headings, passages, a generator, a file of
        # generated pairs): its diagnostic, never evidence. Held-out chat turns are people's
        # questions it never trained on, which is evidence: a chat-log sample may judge it.
        "heldout_question_keys": sorted(
            {
                question_key(q)
                for qid, q in (held.queries.items() if held else ())
                if held is not None and held.sources.get(qid, "file") not in PEOPLES_QUESTIONS
            }
        ),
        **extra,
    }


# -- the query adapter -------------------------------------------------------------------------


@dataclass
class AdapterRequest:
    dataset: int | str
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    holdout: float = 0.2
    seed: int = 0
    register: bool = True


def train_query_adapter(
    ctx: FineTuneContext, request: AdapterRequest, progress: bool = False
) -> tuple[ModelVersion | None, str]:
    """A linear query adapter over the active model (seconds of training; no re-embedding), and
    its registered candidate; (version, one line with the held-out diagnostic)."""
    from core.embedding.providers import embedding_id
    from core.index.store import index_embedding
    from finetune.embedding.adapter import AdapterConfig, save_adapter, train_adapter
    from finetune.embedding.data import read_dataset
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import load_model

    active, applied = active_embedding(ctx)
    data, card = read_dataset(Path(pairs_dataset(ctx, request.dataset).path))
    train, held = split_pairs(data, request.holdout, request.seed)
    model = load_model(model_dir(applied), read_window(applied))
    cfg = AdapterConfig(
        epochs=request.epochs,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        seed=request.seed,
    )
    adapter, curve = train_adapter(model, train, cfg, progress=progress)
    out = embedding_root(ctx.settings) / "adapters" / f"adapter-{stamp()}"
    base_id = embedding_id(index_embedding(applied))
    save_adapter(adapter, curve, out, base_id)
    diagnostic: dict[str, Any] = {}
    line = f"trained a query adapter ({cfg.epochs} epochs) -> {out}"
    if held is not None:
        diagnostic = {
            "base": evaluate_model(held, model),
            "candidate": evaluate_model(held, model, adapter=adapter),
            "note": DIAGNOSTIC,
        }
        line += (
            f"; diagnostic on {len(held)} held-out pairs: mrr_at_10 "
            f"{diagnostic['base']['mrr_at_10']:.3f} -> "
            f"{diagnostic['candidate']['mrr_at_10']:.3f}"
        )
    write_heldout(held, out)
    if not request.register:
        return None, line
    cfg_now = applied.embedding
    spec = {
        "embedding": {
            "provider": cfg_now.provider,
            "model": cfg_now.model,
            "max_seq_length": cfg_now.max_seq_length,
            "backend": cfg_now.backend,
            "query_adapter": str(out.resolve()),
        }
    }
    version = ctx.registry.register(
        "embedding",
        f"query adapter on {card.name}",
        spec,
        parent_id=active.id if active else None,
        provenance=provenance_of(
            card,
            train,
            base_id,
            {"adapter": adapter.meta, "heldout_diagnostic": diagnostic},
            held,
        ),
    )
    return version, line


def heldout_diagnostic(
    ctx: FineTuneContext, candidate_id: int, file: Path | None = None
) -> dict[str, dict[str, float]]:
    """hit@k/MRR of the active model and of an embedding candidate on the candidate's held-out
    pairs (or a LlamaIndex JSON file): a training diagnostic, by label."""
    from core.embedding.adapter import load_adapter
    from core.registry import apply_spec
    from finetune.embedding.data import load_llamaindex
    from finetune.embedding.evaluate import evaluate_model
    from finetune.embedding.train import load_model

    active, applied = active_embedding(ctx)
    candidate = ctx.registry.get(candidate_id)
    if candidate.kind != "embedding":
        raise RagError(f"{candidate.label} is not an embedding version")
    path = file
    if path is None:
        found = candidate.spec.get("embedding", {})
        folder = found.get("query_adapter") or found.get("model")
        path = Path(folder) / "heldout.json" if folder else None
    if path is None or not Path(path).is_file():
        raise RagError(f"{candidate.label} has no held-out pairs; give a LlamaIndex JSON file")
    data = load_llamaindex(Path(path))
    rows = {}
    for label, cfg in (
        (f"active {active.label if active else ''}".strip(), applied),
        (f"candidate {candidate.label}", apply_spec(ctx.settings, candidate)),
    ):
        model = load_model(model_dir(cfg), read_window(cfg))
        adapter = cfg.embedding.query_adapter
        rows[label] = evaluate_model(
            data, model, adapter=load_adapter(Path(adapter)) if adapter else None
        )
    return rows
