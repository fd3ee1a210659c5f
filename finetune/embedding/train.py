"""Fine-tuning the embedding model with sentence-transformers' own trainer and losses: GISTEmbed
(the default: MNRL whose in-batch and mined negatives the base model, frozen, vets), MNRL with
mined hard negatives, its symmetric variant, and CachedMNRL for large batches on CPU; seeded, with
a progress bar and a loss curve saved beside the model."""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from core.errors import RagError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from finetune.embedding.data import PairSet

log = logging.getLogger(__name__)

CHECKPOINT_STEPS = 20  # a killed job loses at most this many steps
Loss = Literal["mnrl", "symmetric", "cached", "cached-symmetric", "gist"]
LOSSES: tuple[str, ...] = get_args(Loss)


def check_loss(loss: str) -> None:
    """Refuse a loss this trainer does not know, naming the ones it does."""
    if loss not in LOSSES:
        raise RagError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")


@dataclass
class TrainConfig:
    """How a model is trained; recorded in the candidate's provenance."""

    loss: Loss = "gist"
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    max_seq_length: int | None = None  # None: the base model's own window
    mini_batch_size: int = 16  # CachedMNRL: texts per forward pass
    scale: float = 20.0
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot train (unknown loss, empty batches)."""
        check_loss(self.loss)
        if self.epochs < 1 or self.batch_size < 2:
            raise RagError("train with at least one epoch and batches of two pairs or more")


@dataclass
class TrainResult:
    """Where the trained model went and how training went."""

    model_dir: Path
    seconds: float
    steps: int
    losses: list[tuple[float, float]] = field(default_factory=list)  # (epoch, loss)
    config: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so two runs on one machine train the same model."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model(path: Path | str, max_seq_length: int | None = None) -> SentenceTransformer:
    """A sentence-transformers model from a local directory (never the hub), on the CPU."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def training_table(data: PairSet) -> Any:
    """(anchor, positive, negative_1..n) rows as a `datasets.Dataset`; negatives only when every
    query has the same number of them (mine_negatives makes sure)."""
    from datasets import Dataset

    pairs = data.pairs()
    columns: dict[str, list[str]] = {
        "anchor": [q for _, q, _ in pairs],
        "positive": [p for _, _, p in pairs],
    }
    counts = {len(data.negatives.get(qid, ())) for qid, _, _ in pairs}
    if len(counts) == 1 and (n := counts.pop()) > 0:
        for i in range(n):
            columns[f"negative_{i + 1}"] = [data.corpus[data.negatives[q][i]] for q, _, _ in pairs]
    return Dataset.from_dict(columns)


def build_loss(model: SentenceTransformer, cfg: TrainConfig, base: Path | str) -> Any:
    """The sentence-transformers loss `cfg.loss` names, for `model` loaded from `base`."""
    from sentence_transformers import losses

    if cfg.loss == "gist":
        # The base model, frozen, as the guide: a passage of the batch (or a mined negative) that
        # it scores above the question's own passage is left out of that question's negatives,
        # not taught as wrong (an overlapping passage, or one that says the same).
        guide = load_model(base, cfg.max_seq_length).requires_grad_(False)
        return losses.GISTEmbedLoss(model, guide, temperature=1 / cfg.scale)
    symmetric = cfg.loss in ("symmetric", "cached-symmetric")
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    partition = "per_direction" if symmetric else "joint"
    if cfg.loss.startswith("cached"):
        return losses.CachedMultipleNegativesRankingLoss(
            model,
            scale=cfg.scale,
            mini_batch_size=cfg.mini_batch_size,
            directions=directions,
            partition_mode=partition,
        )
    return losses.MultipleNegativesRankingLoss(
        model, scale=cfg.scale, directions=directions, partition_mode=partition
    )


def train_model(
    base: Path | str,
    data: PairSet,
    out_dir: Path,
    cfg: TrainConfig,
    progress: bool = True,
    checkpoints: Path | None = None,
    callbacks: list[Any] | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train a copy of the model at `base` on `data` and save it to `out_dir` together with
    `loss_curve.json` and `train_config.json`. The base model is never modified. With
    `checkpoints`, a checkpoint is kept there every few steps and a run killed midway resumes
    from the last one; `callbacks` watch the trainer (a job's events, cancel, the compute gate);
    `max_steps` stops early (a quick candidate)."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    cfg.check()
    if len(data) < 2:
        raise RagError(
            f"{len(data)} training pair(s) are too few: training needs at least 2 (each question "
            "is told apart from the other questions' passages)"
        )
    seed_everything(cfg.seed)
    model = load_model(base, cfg.max_seq_length)
    table = training_table(data)
    loss = build_loss(model, cfg, base)
    return fit(
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        model,
        table,
        loss,
        cfg,
        out_dir,
        {**asdict(cfg), "base": str(base), "pairs": len(table)},
        progress=progress,
        checkpoints=checkpoints,
        callbacks=callbacks,
        max_steps=max_steps,
        # Two questions about one passage in a batch would be each other's false negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )


def warmup(ratio: float, rows: int, cfg: Any, max_steps: int | None) -> float | int:
    """The trainer's warmup: `ratio` of the steps (rounded up), or none in a run of fewer steps
    than 1 / `ratio`, whose first step would otherwise learn at a rate of 0 (a one-step run would
    register a candidate equal to its base)."""
    per_epoch = -(-rows // max(1, min(cfg.batch_size, rows)))
    steps = max_steps or int(cfg.epochs * per_epoch + 0.999)
    return ratio if ratio and steps * ratio >= 1 else 0


def fit(
    trainer_cls: Any,
    args_cls: Any,
    model: Any,
    table: Any,
    loss: Any,
    cfg: Any,
    out_dir: Path,
    config: dict[str, Any],
    progress: bool = True,
    checkpoints: Path | None = None,
    callbacks: list[Any] | None = None,
    max_steps: int | None = None,
    **extra_args: Any,
) -> TrainResult:
    """One sentence-transformers training run (a bi-encoder's or a cross-encoder's trainer and
    arguments classes), seeded, on the CPU: with `checkpoints`, a checkpoint every few steps and
    a killed run resumed from the last one; without a progress bar, none of the per-step dicts
    the trainer prints in its place. Saves the model to `out_dir` with `loss_curve.json`,
    `loss_curve.html` and `train_config.json` (`config`)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-") as scratch:
        keep = checkpoints is not None
        args = args_cls(
            output_dir=str(checkpoints) if keep else scratch,
            num_train_epochs=cfg.epochs,
            max_steps=max_steps or -1,
            per_device_train_batch_size=min(cfg.batch_size, len(table)),
            learning_rate=cfg.learning_rate,
            warmup_steps=warmup(cfg.warmup_ratio, len(table), cfg, max_steps),
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
            **extra_args,
        )
        trainer = trainer_cls(
            model=model, args=args, train_dataset=table, loss=loss, callbacks=callbacks or None
        )
        if not progress:
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
    (out_dir / "train_config.json").write_text(json.dumps(config, indent=2))
    write_loss_plot(curve, out_dir / "loss_curve.html")
    log.info("trained %d steps in %.1f s -> %s", steps, seconds, out_dir)
    return TrainResult(out_dir, seconds, steps, curve, config)


def write_loss_plot(curve: list[tuple[float, float]], path: Path) -> None:
    """The loss curve as a self-contained plotly page (what the admin looks at)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[e for e, _ in curve], y=[v for _, v in curve], mode="lines"))
    fig.update_layout(title="training loss", xaxis_title="epoch", yaxis_title="loss")
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
