"""Training the linear query adapter (core/query_adapter.py) over a frozen embedding model: the
cheap alternative that needs no re-embedding. Questions and passages are embedded once; only the
adapter learns, with the in-batch ranking loss (MNRL) and the mined negatives."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.embedding.adapter import QueryAdapter
from core.errors import RagError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from finetune.embedding.data import PairSet


@dataclass
class AdapterConfig:
    """How the adapter is trained; recorded with it."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    scale: float = 20.0
    seed: int = 0


def train_adapter(
    model: SentenceTransformer,
    data: PairSet,
    cfg: AdapterConfig,
    progress: bool = True,
) -> tuple[QueryAdapter, list[tuple[float, float]]]:
    """A QueryAdapter trained on `data` over `model` (frozen) and its loss curve (epoch, loss)."""
    import torch
    from tqdm import tqdm

    if len(data) < 2:
        raise RagError(f"{len(data)} training pair(s) are too few to train an adapter")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pairs = data.pairs()
    queries = torch.tensor(model.encode([q for _, q, _ in pairs], convert_to_numpy=True))
    docs_ids = list(dict.fromkeys(data.corpus))
    index = {d: i for i, d in enumerate(docs_ids)}
    docs = torch.tensor(model.encode([data.corpus[d] for d in docs_ids], convert_to_numpy=True))
    docs = torch.nn.functional.normalize(docs, dim=1)
    positive = torch.tensor([index[data.relevant_docs[q][0]] for q, _, _ in pairs])
    negatives = [[index[n] for n in data.negatives.get(q, [])] for q, _, _ in pairs]
    dim = queries.shape[1]
    layer = torch.nn.Linear(dim, dim)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.AdamW(layer.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    curve: list[tuple[float, float]] = []
    n = len(pairs)
    bar = tqdm(range(cfg.epochs), desc="adapter", unit="epoch", disable=not progress)
    started = time.perf_counter()
    for epoch in bar:
        order = rng.permutation(n)
        total, batches = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            q = queries[idx]
            q = torch.nn.functional.normalize(q + layer(q), dim=1)
            # Candidates: the batch's positives (in-batch negatives) plus its mined negatives.
            mined = (x for i in idx for x in negatives[i])
            cand = list(dict.fromkeys([*positive[idx].tolist(), *mined]))
            where = {c: j for j, c in enumerate(cand)}
            logits = cfg.scale * q @ docs[cand].T
            target = torch.tensor([where[int(p)] for p in positive[idx]])
            loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        curve.append((float(epoch + 1), total / batches))
        bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
    meta: dict[str, Any] = {
        "config": asdict(cfg),
        "pairs": n,
        "seconds": time.perf_counter() - started,
    }
    adapter = QueryAdapter(
        layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy(), meta
    )
    return adapter, curve


def save_adapter(
    adapter: QueryAdapter, curve: list[tuple[float, float]], directory: Path, base: str
) -> None:
    """Save the adapter with its loss curve and the id of the model it adapts."""
    from finetune.embedding.train import write_loss_plot

    adapter.meta["base_embedding_id"] = base
    adapter.save(directory)
    (directory / "loss_curve.json").write_text(json.dumps({"epoch_loss": curve}))
    write_loss_plot(curve, directory / "loss_curve.html")
