"""Re-ranking with a cross-encoder: the best fused candidates of a question are read together with
it by a sentence-transformers cross-encoder, and its score is mixed with their retrieval score.
Runs on the same CPU route as the embedding model (ONNX Runtime, int8 by default; torch on
request), inside the process's compute gate."""

from __future__ import annotations

import logging
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ConfigError
from rag.units import content_words

if TYPE_CHECKING:
    from core.compute import ComputeGate
    from core.settings import RerankerSettings

log = logging.getLogger(__name__)

BATCH = 16  # question/passage pairs per forward pass


@dataclass(frozen=True)
class Pieces:
    """How a tokenizer reads text: where each word piece of a text starts and ends in it, and
    how many special pieces it adds to a question/passage pair ([CLS] q [SEP] p [SEP]: 3)."""

    offsets: Callable[[str], Sequence[tuple[int, int]]]
    special: int


def _stems(question: str) -> set[str]:
    """The question's content words of two letters or more, a plural's last s dropped from
    words of five letters or more ("risks": "risk"; "runs" stays)."""
    return {
        w[:-1] if len(w) >= 5 and w.endswith("s") else w
        for w in content_words(question)
        if len(w) >= 2
    }


def _occurrences(words: set[str], text: str) -> list[tuple[int, str]]:
    """(character position in `text`, word) of each place a word of the question starts a word
    of `text`: at a word's start, so "risk" counts in "risks" but "form" not in "platform", and
    after a digit too, since extracted text glues words together ("Legal Proceedings46Item")."""
    found = []
    for w in words:
        pattern = rf"(?<![^\W\d_]){re.escape(w)}"
        if len(w) < 4:
            pattern += r"(?!\w)"  # a short word whole: "run" not in "running"
        found.extend((m.start(), w) for m in re.finditer(pattern, text, re.IGNORECASE))
    return sorted(found)


def focus(question: str, passage: str, pieces: Pieces, max_length: int) -> str:
    """The part of `passage` a cross-encoder reading `max_length` word pieces sees beside the
    question: the whole passage when it fits, else the window (of the room the question leaves,
    every quarter of it) that holds the most of the question's words, of equals the one they
    stand most inside of; the head when none is there. A passage longer than the window is
    otherwise cut to its head, and the place that answers the question is often further on;
    training reads the same windows as serving."""
    room = max_length - len(pieces.offsets(question)) - pieces.special
    spans = pieces.offsets(passage)
    if room < 16 or len(spans) <= room:
        return passage
    places = _occurrences(_stems(question), passage)
    at = [a for a, _ in places]
    best, best_key = (0, room), (0, 0.0)
    for start in [*range(0, len(spans) - room, max(1, room // 4)), len(spans) - room]:
        end = start + room
        lo, hi = spans[start][0], max(spans[end - 1][1], spans[start][0] + 1)
        inside = places[bisect_left(at, lo) : bisect_left(at, hi)]
        if not inside:
            continue
        middle = (lo + hi) / 2
        key = (
            len({w for _, w in inside}),
            -sum(abs(a - middle) for a, _ in inside) / len(inside) / (hi - lo),
        )
        if key > best_key:
            best, best_key = (start, end), key
    start, end = best
    return passage[spans[start][0] : spans[end - 1][1]]


def pieces_of(tokenizer: Any) -> Pieces | None:
    """How a `tokenizers` Tokenizer or a fast Hugging Face tokenizer reads whole texts (a copy,
    never truncating or padding); None for a slow tokenizer, whose passages are then read from
    their head."""
    from tokenizers import Tokenizer

    if not isinstance(tokenizer, Tokenizer):
        tokenizer = getattr(tokenizer, "backend_tokenizer", None)
        if tokenizer is None:
            return None
    whole = Tokenizer.from_str(tokenizer.to_str())
    whole.no_truncation()
    whole.no_padding()
    processor = whole.post_processor
    special = processor.num_special_tokens_to_add(True) if processor is not None else 0

    def offsets(text: str) -> Sequence[tuple[int, int]]:
        return whole.encode(text, add_special_tokens=False).offsets

    return Pieces(offsets, special)


def check_model_dir(model_dir: Path) -> None:
    """Refuse a folder that holds no cross-encoder, saying what is wrong."""
    import json

    if not model_dir.is_dir():
        raise ConfigError(f"reranker model folder {model_dir} does not exist")
    config = model_dir / "config.json"
    if not config.is_file():
        raise ConfigError(f"{model_dir} holds no model (config.json is missing)")
    try:
        found = json.loads(config.read_text())
    except ValueError as exc:
        raise ConfigError(f"{config} is not valid JSON: {exc}") from exc
    architectures = found.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"{model_dir} is not a cross-encoder (its architecture is "
            f"{', '.join(architectures) or 'not named'}); train one with "
            "`python -m finetune.rerank train` or copy one in"
        )
    labels = len(found.get("id2label") or {}) or found.get("num_labels") or 1
    if labels != 1:
        raise ConfigError(f"{model_dir} scores {labels} labels; a reranker scores one")


class CrossEncoderScorer:
    """Relevance scores (logits: higher is more relevant) of passages for a question."""

    def __init__(
        self,
        model_dir: Path,
        backend: str = "onnx-int8",
        max_length: int = 256,
        cache_dir: Path | None = None,
        gate: ComputeGate | None = None,
        read_focus: bool = True,
    ):
        check_model_dir(model_dir)
        self.model_dir = model_dir
        self.backend = backend
        self.max_length = max_length
        self.gate = gate
        self._torch: Any = None
        self._session: Any = None
        self._pieces: Pieces | None = None
        if backend == "torch":
            from sentence_transformers.cross_encoder import CrossEncoder

            self._torch = CrossEncoder(
                str(model_dir), device="cpu", local_files_only=True, max_length=max_length
            )
            self._pieces = pieces_of(self._torch.tokenizer) if read_focus else None
            return
        if backend not in ("onnx", "onnx-int8"):
            raise ConfigError(
                f"unknown reranker backend {backend!r}; known: torch, onnx, onnx-int8"
            )
        if not (model_dir / "tokenizer.json").is_file():
            raise ConfigError(
                f"{model_dir} has no tokenizer.json (a fast tokenizer), which the ONNX backends "
                "need; use RAG_RERANKER__BACKEND=torch for this model"
            )
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from core.embedding.onnx import export_onnx

        cache = cache_dir or model_dir / ".onnx"
        path = export_onnx(model_dir, cache, quantize=backend == "onnx-int8", scores=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        tokenizer = Tokenizer.from_str((model_dir / "tokenizer.json").read_text())
        # Cut as in training (and as the torch backend cuts): the longer of the two first, so a
        # question longer than the window is cut too rather than refused.
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pieces = pieces_of(tokenizer) if read_focus else None

    def focused(self, query: str, text: str) -> str:
        """What of `text` the model reads beside `query` (see focus)."""
        if self._pieces is None:
            return text
        return focus(query, text, self._pieces, self.max_length)

    def _onnx(self, query: str, texts: Sequence[str]) -> np.ndarray:
        from core.embedding.onnx import padded_feeds

        encodings = self._tokenizer.encode_batch([(query, t) for t in texts])
        feeds = padded_feeds(encodings)
        logits = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return np.asarray(logits, np.float32).reshape(len(texts), -1)[:, 0]

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One score per text, in order."""
        if not texts:
            return np.zeros(0, np.float32)
        texts = [self.focused(query, t) for t in texts]
        with self.gate.hold() if self.gate is not None else nullcontext():
            if self._torch is not None:
                scores = self._torch.predict(
                    [(query, t) for t in texts],
                    batch_size=BATCH,
                    activation_fn=_identity(),
                    show_progress_bar=False,
                )
                return np.asarray(scores, np.float32).reshape(len(texts))
            out = np.zeros(len(texts), np.float32)
            # Passages of like length batched together pad least.
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            for start in range(0, len(order), BATCH):
                rows = order[start : start + BATCH]
                out[rows] = self._onnx(query, [texts[i] for i in rows])
            return out


def _identity() -> Any:
    import torch

    return torch.nn.Identity()


@dataclass
class Reranking:
    """A scorer and how its scores are mixed into retrieval (see RerankerSettings)."""

    scorer: CrossEncoderScorer
    top_n: int
    weight: float

    @classmethod
    def from_settings(
        cls, cfg: RerankerSettings, cache_dir: Path, gate: ComputeGate | None = None
    ) -> Reranking | None:
        if cfg.model_dir is None:
            return None
        scorer = CrossEncoderScorer(
            cfg.model_dir, cfg.backend, cfg.max_length, cache_dir, gate, read_focus=cfg.focus
        )
        return cls(scorer, cfg.top_n, cfg.weight)


def scaled(values: np.ndarray) -> np.ndarray:
    """0..1 over the values given (all 1 when they are equal)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones_like(values)
    return (values - lo) / (hi - lo)


def mix(fused: Sequence[float], scores: Sequence[float], weight: float) -> np.ndarray:
    """The new scores of re-scored candidates: `weight` of the reranker's, the rest of the
    retrieval's, each scaled 0..1 over these candidates."""
    return (1 - weight) * scaled(np.asarray(fused, np.float64)) + weight * scaled(
        np.asarray(scores, np.float64)
    )
