"""Training a cross-encoder reranker with sentence-transformers' CrossEncoderTrainer: from a
cross-encoder folder the admin names, or, with none, one initialised from the packaged
all-MiniLM-L6-v2's transformer weights (a new one-score head on top); each question with its
passage and its mined hard negatives; seeded, with a loss curve saved beside the model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.errors import RagError
from finetune.embedding.train import TrainResult, fit, seed_everything
from rag.rerank import focus, pieces_of

if TYPE_CHECKING:
    from sentence_transformers.cross_encoder import CrossEncoder

    from finetune.embedding.data import PairSet

log = logging.getLogger(__name__)

Loss = Literal["listwise", "bce"]
LOSSES: tuple[str, ...] = ("listwise", "bce")


@dataclass
class RerankConfig:
    """How a reranker is trained; recorded in the candidate's provenance."""

    loss: Loss = "listwise"
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 3e-4
    warmup_ratio: float = 0.1
    max_length: int = 128
    # Each passage longer than the window is read where it shares most words with the question,
    # as serving reads it (rag.rerank.focus), rather than cut to its head.
    focus: bool = True
    seed: int = 0

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise RagError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise RagError("train with at least one epoch and batches of two questions or more")


def base_model(folder: Path | str | None) -> Path:
    """The model training starts from: the folder named, else the packaged all-MiniLM-L6-v2."""
    if folder is None:
        from core.embedding.window import packaged_model_dir

        return packaged_model_dir()
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise RagError(f"{path} holds no model to start from (config.json is missing)")
    return path


def load_cross_encoder(path: Path | str, max_length: int) -> CrossEncoder:
    """A cross-encoder from a local folder (never the hub), on the CPU. A folder holding a plain
    transformer (the packaged embedding model) gets a new one-score head."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a new head is expected, not a warning to print
    try:
        return CrossEncoder(
            str(path), num_labels=1, max_length=max_length, device="cpu", local_files_only=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def training_table(data: PairSet, loss: str, read: Callable[[str, str], str] | None = None) -> Any:
    """`listwise`: (question, passage, negative_1..n) rows, every question with the same number
    of mined negatives; `bce`: (question, passage, label) rows, 1 for the passage, 0 for each
    negative. `read(question, passage)` gives what of a passage the model reads (all of it by
    default)."""
    from datasets import Dataset

    def seen(query: str, text: str) -> str:
        return read(query, text) if read is not None else text

    pairs = data.pairs()
    counts = {len(data.negatives.get(qid, ())) for qid, _, _ in pairs}
    if counts == {0} or len(counts) != 1:
        raise RagError(
            "every question needs the same number (one or more) of mined negatives; build the "
            "pairs with negatives"
        )
    n = counts.pop()
    if loss == "bce":
        rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
        for qid, query, positive in pairs:
            for text, label in [(positive, 1.0)] + [
                (data.corpus[d], 0.0) for d in data.negatives[qid]
            ]:
                rows["query"].append(query)
                rows["passage"].append(seen(query, text))
                rows["label"].append(label)
        return Dataset.from_dict(rows)
    columns: dict[str, list[str]] = {
        "query": [q for _, q, _ in pairs],
        "passage": [seen(q, p) for _, q, p in pairs],
    }
    for i in range(n):
        columns[f"negative_{i + 1}"] = [
            seen(query, data.corpus[data.negatives[qid][i]]) for qid, query, _ in pairs
        ]
    return Dataset.from_dict(columns)


def reader(model: CrossEncoder, cfg: RerankConfig) -> Callable[[str, str], str]:
    """What of a passage the model reads in training: as serving reads it (rag.rerank.focus) at
    the training window, or all of it (cut to its head by the trainer) without `focus`."""
    pieces = pieces_of(model.tokenizer) if cfg.focus else None

    def read(query: str, text: str) -> str:
        return focus(query, text, pieces, cfg.max_length) if pieces is not None else text

    return read


def build_loss(model: CrossEncoder, cfg: RerankConfig) -> Any:
    from sentence_transformers.cross_encoder import losses

    if cfg.loss == "bce":
        return losses.BinaryCrossEntropyLoss(model)
    # The passage against its mined negatives and one other question's passage from the batch.
    return losses.MultipleNegativesRankingLoss(model, num_negatives=1)


def train_reranker(
    base: Path | str,
    data: PairSet,
    out_dir: Path,
    cfg: RerankConfig,
    progress: bool = True,
    checkpoints: Path | None = None,
    callbacks: list[Any] | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train a cross-encoder from `base` on `data` (with negatives) and save it to `out_dir`
    with `loss_curve.json`, `loss_curve.html` and `train_config.json`; `base` is never
    modified. With `checkpoints`, a run killed midway resumes from the last checkpoint."""
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )

    cfg.check()
    if len(data) < 2:
        raise RagError(f"{len(data)} question(s) are too few to train a reranker")
    seed_everything(cfg.seed)
    model = load_cross_encoder(base, cfg.max_length)
    table = training_table(data, cfg.loss, reader(model, cfg))
    loss = build_loss(model, cfg)
    config = {**asdict(cfg), "base": str(base), "questions": len(data), "rows": len(table)}
    return fit(
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        model,
        table,
        loss,
        cfg,
        out_dir,
        config,
        progress=progress,
        checkpoints=checkpoints,
        callbacks=callbacks,
        max_steps=max_steps,
    )
