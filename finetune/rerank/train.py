"""Training a cross-encoder reranker with sentence-transformers' CrossEncoderTrainer: from a
cross-encoder folder the admin names, or, with none, one initialised from the packaged
all-MiniLM-L6-v2's transformer weights (a new one-score head on top); each question with its
passage and its mined hard negatives; seeded, with a loss curve saved beside the model."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.errors import RagError
from finetune.embedding.train import TrainResult, seed_everything, write_loss_plot

if TYPE_CHECKING:
    from sentence_transformers.cross_encoder import CrossEncoder

    from finetune.embedding.data import PairSet

log = logging.getLogger(__name__)

CHECKPOINT_STEPS = 20  # a killed job loses at most this many steps
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


def training_table(data: PairSet, loss: str) -> Any:
    """`listwise`: (question, passage, negative_1..n) rows, every question with the same number
    of mined negatives; `bce`: (question, passage, label) rows, 1 for the passage, 0 for each
    negative."""
    from datasets import Dataset

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
                rows["passage"].append(text)
                rows["label"].append(label)
        return Dataset.from_dict(rows)
    columns: dict[str, list[str]] = {
        "query": [q for _, q, _ in pairs],
        "passage": [p for _, _, p in pairs],
    }
    for i in range(n):
        columns[f"negative_{i + 1}"] = [data.corpus[data.negatives[q][i]] for q, _, _ in pairs]
    return Dataset.from_dict(columns)


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
    table = training_table(data, cfg.loss)
    loss = build_loss(model, cfg)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rerank-train-") as scratch:
        keep = checkpoints is not None
        args = CrossEncoderTrainingArguments(
            output_dir=str(checkpoints) if keep else scratch,
            num_train_epochs=cfg.epochs,
            max_steps=max_steps or -1,
            per_device_train_batch_size=min(cfg.batch_size, len(table)),
            learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_ratio,  # a float below 1: a share of the steps
            seed=cfg.seed,
            data_seed=cfg.seed,
            logging_steps=1,
            save_strategy="steps" if keep else "no",
            save_steps=CHECKPOINT_STEPS,
            save_total_limit=1,
            report_to="none",
            disable_tqdm=not progress,
            use_cpu=True,
            dataloader_drop_last=False,
        )
        trainer = CrossEncoderTrainer(
            model=model, args=args, train_dataset=table, loss=loss, callbacks=callbacks or None
        )
        if not progress:  # no bar: nor the per-step dicts the trainer prints in its place
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        resume = keep and any(Path(checkpoints).glob("checkpoint-*"))
        trainer.train(resume_from_checkpoint=True if resume else None)
        history = trainer.state.log_history
        steps = int(trainer.state.global_step)
    seconds = time.perf_counter() - started
    curve = [(float(h["epoch"]), float(h["loss"])) for h in history if "loss" in h]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    (out_dir / "loss_curve.json").write_text(json.dumps({"epoch_loss": curve}))
    config = {**asdict(cfg), "base": str(base), "questions": len(data), "rows": len(table)}
    (out_dir / "train_config.json").write_text(json.dumps(config, indent=2))
    write_loss_plot(curve, out_dir / "loss_curve.html")
    log.info("trained a reranker: %d steps in %.1f s -> %s", steps, seconds, out_dir)
    return TrainResult(out_dir, seconds, steps, curve, config)
