"""ONNX Runtime backends for local sentence-transformers models: the model is exported once from its
own directory with `torch.onnx` (never downloaded), optionally quantized to int8 with ONNX Runtime's
dynamic quantization, cached under the data directory and reused; pooling and normalisation follow
the model's own modules, so vectors agree with the torch backend."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from core.embedding.window import model_window
from core.errors import ConfigError

log = logging.getLogger(__name__)

EXPORT_VERSION = "6"  # bump when the export recipe changes, so caches are rebuilt


def model_fingerprint(model_dir: Path) -> str:
    """Identifies the weights and the tokenizer, so an export is reused only for the same model."""
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for name in sorted(os.listdir(model_dir)):
        path = model_dir / name
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            digest.update(name.encode())
            digest.update(str(path.stat().st_size).encode())
            with path.open("rb") as fh:
                digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def _pooling(model_dir: Path) -> tuple[str, bool]:
    """(pooling mode, normalise?) from the model's modules.json; mean pooling when absent."""
    mode, normalize = "mean", False
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return mode, True
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            config = json.loads((model_dir / module["path"] / "config.json").read_text())
            if config.get("pooling_mode_cls_token"):
                mode = "cls"
            elif config.get("pooling_mode_max_tokens"):
                mode = "max"
        elif kind.endswith("Normalize"):
            normalize = True
    return mode, normalize


class _Locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = self.path.open("w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def export_onnx(model_dir: Path, cache_dir: Path, quantize: bool, scores: bool = False) -> Path:
    """The ONNX file for `model_dir` (int8 when `quantize`), made on first use and cached: the
    transformer's last hidden state, or with `scores` a cross-encoder's relevance logits.

    Written to a temporary name and renamed, under a lock, so a crash or a second process never
    leaves a half-written model that a later start would load."""
    kind = "-scores" if scores else ""
    target_dir = cache_dir / f"{model_dir.resolve().name}-{model_fingerprint(model_dir)}{kind}"
    fp32 = target_dir / "model.onnx"
    int8 = target_dir / "model-int8.onnx"
    wanted = int8 if quantize else fp32
    if wanted.is_file():
        return wanted
    with _Locked(target_dir.parent / f".{target_dir.name}.lock"):
        if wanted.is_file():  # another process made it while we waited
            return wanted
        target_dir.mkdir(parents=True, exist_ok=True)
        if not fp32.is_file():
            log.info("exporting %s to ONNX (once; cached in %s)", model_dir, target_dir)
            with warnings.catch_warnings():
                # The tracer's notes on shapes and indexing are about this code, not the admin's
                # to act on (tests/test_embedding_backends.py checks the graph against torch).
                # (TracerWarning is no UserWarning: filtered by the modules that raise them.)
                warnings.filterwarnings("ignore", module=r"(torch|transformers)(\.|$)")
                _export_fp32(model_dir, fp32, scores)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            log.info("quantizing %s to int8 (once)", fp32.name)
            tmp = target_dir / f".tmp-{uuid.uuid4().hex[:8]}.onnx"
            # Matrix products only, one scale per output channel: embedding tables and per-tensor
            # scales cost far more agreement with the fp32 model than they save in time. Weights
            # in 7 bits (reduce_range): CPUs without VNNI saturate on full-range int8 products,
            # which cost retrieval quality (measured on the 10-K benchmark: hit@5 -0.010 full
            # range, -0.008 reduced, at the same speed).
            with _root_logger_left_alone():
                quantize_dynamic(
                    str(fp32),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"],
                    per_channel=True,
                    reduce_range=True,
                )
            os.replace(tmp, int8)
    return wanted


@contextlib.contextmanager
def _root_logger_left_alone() -> Iterator[None]:
    """The quantizer logs a hint through `logging.warning`, which installs a handler on the root
    logger of a process that has none; from then on every library's debug records (bm25s logs at
    DEBUG) would print. For the call, a process without handlers gets a stand-in for Python's
    last-resort handler: other warnings (from any thread) still reach stderr as they would have,
    the quantizer's own hint goes to our debug log, nothing below WARNING prints, and the root
    has no handler again afterwards. A process that configured logging is left as it is."""
    root = logging.getLogger()
    # The hint is logged on the root logger itself, so a filter there catches it (and nothing that
    # other loggers propagate) in a process that configured logging too, as the app does.
    root.addFilter(_not_the_quantizers_hint)
    guard = None
    if not root.handlers:
        guard = logging.StreamHandler()  # stderr, message only, like the last-resort handler
        guard.setLevel(logging.WARNING)
        root.addHandler(guard)
    try:
        yield
    finally:
        root.removeFilter(_not_the_quantizers_hint)
        if guard is not None:
            root.removeHandler(guard)


def _not_the_quantizers_hint(record: logging.LogRecord) -> bool:
    if f"onnxruntime{os.sep}quantization" in record.pathname:
        log.debug("quantizer: %s", record.getMessage())
        return False
    return True


def _export_fp32(model_dir: Path, out: Path, scores: bool = False) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    class Encoder(torch.nn.Module):
        """The transformer with a fixed, keyword-only call: its last hidden state (or, for a
        cross-encoder, its logits)."""

        def __init__(self) -> None:
            super().__init__()
            load = AutoModelForSequenceClassification if scores else AutoModel
            self.inner = load.from_pretrained(
                str(model_dir), local_files_only=True, attn_implementation="eager"
            )

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.logits if scores else out.last_hidden_state

    model = Encoder()
    model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    tmp_dir = out.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir()
    try:
        tmp = tmp_dir / "model.onnx"
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        output = "logits" if scores else "last_hidden_state"
        axes[output] = {0: "batch"} if scores else {0: "batch", 1: "sequence"}
        with torch.no_grad():
            torch.onnx.export(
                model,
                dummy,
                str(tmp),
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


class OnnxEmbedding(BaseEmbedding):
    """A local sentence-transformers model run by ONNX Runtime (fp32 or int8)."""

    backend: str = "onnx"
    max_length: int = 256
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _tokenizer_json: str = PrivateAttr()
    _inputs: list[str] = PrivateAttr()
    _pooling: str = PrivateAttr()
    _normalize: bool = PrivateAttr()

    def __init__(
        self,
        model_dir: Path,
        cache_dir: Path,
        backend: str = "onnx-int8",
        max_length: int | None = None,
        embed_batch_size: int = 64,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if backend not in ("onnx", "onnx-int8"):
            raise ConfigError(f"unknown ONNX backend {backend!r}; known: onnx, onnx-int8")
        if not (model_dir / "tokenizer.json").is_file():
            raise ConfigError(
                f"{model_dir} has no tokenizer.json (a fast tokenizer), which the ONNX backends "
                "need; use RAG_EMBEDDING__BACKEND=torch for this model"
            )
        window = max_length or model_window(model_dir)
        super().__init__(
            model_name=str(model_dir),
            embed_batch_size=embed_batch_size,
            backend=backend,
            max_length=window,
        )
        path = export_onnx(model_dir, cache_dir, quantize=backend == "onnx-int8")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer_json = (model_dir / "tokenizer.json").read_text()
        tokenizer = Tokenizer.from_str(self._tokenizer_json)
        tokenizer.enable_truncation(max_length=window)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pooling, self._normalize = _pooling(model_dir)

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def chunk_tokenizer(self):
        """An independent tokenizer without truncation, for measuring chunks (thread-safe use
        beside the embedding threads)."""
        from tokenizers import Tokenizer

        own = Tokenizer.from_str(self._tokenizer_json)
        own.no_truncation()
        own.no_padding()
        return own

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        feeds = padded_feeds(encodings)
        mask = feeds["attention_mask"]
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        elif self._pooling == "max":
            pooled = np.where(mask[..., None] > 0, hidden, -1e9).max(axis=1)
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self._normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Rows in input order; batches are formed from texts of like length to pad least."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), self.embed_batch_size):
            rows = order[start : start + self.embed_batch_size]
            vectors = self._encode_batch([texts[i] for i in rows])
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), np.float32)
            out[rows] = vectors
        return out

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


def padded_feeds(encodings: Sequence[Any]) -> dict[str, np.ndarray]:
    """A batch of tokenizer encodings as a BERT-style ONNX model's inputs (ids, attention mask,
    token types), zero-padded to the longest; the caller feeds a model only the inputs it takes."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), np.int64)
    mask = np.zeros((len(encodings), width), np.int64)
    types = np.zeros((len(encodings), width), np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
