"""The embedding backends (torch, bfloat16, ONNX fp32 and int8) on the packaged model: they agree,
the ONNX export is made once and reused, the default follows the CPU, and a collection keeps the
window and backend that built it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ingest import ingest_paths
from tests.support.paths import ROOT


def _python(script: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """`script` run in a fresh interpreter from the repository root; it must succeed."""
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr
    return run


def test_onnx_backends_agree_with_torch_and_reuse_their_export(tmp_path):
    """The packaged model through each backend, offline, on real sentences."""
    import numpy as np

    from core.embedding.onnx import model_fingerprint
    from core.embedding.providers import build_embedding, embedding_id
    from core.embedding.window import packaged_model_dir
    from core.settings import EmbeddingSettings
    from tests.support.paths import MODEL_CACHE

    sentences = [
        "The lighthouse keeper of Velmora has served for thirty-one years.",
        "pg_dump writes one database to a single archive file.",
        "Photosynthesis turns carbon dioxide and water into sugar.",
        "short",
    ]
    torch_model = build_embedding(EmbeddingSettings(backend="torch"))
    reference = np.asarray(torch_model.get_text_embedding_batch(sentences))
    for backend, floor in (("torch-bf16", 0.999), ("onnx", 0.99), ("onnx-int8", 0.95)):
        model = build_embedding(EmbeddingSettings(backend=backend), cache_dir=MODEL_CACHE)
        vectors = np.asarray(model.get_text_embedding_batch(sentences))
        assert (np.sum(reference * vectors, axis=1) > floor).all(), backend
        assert embedding_id(EmbeddingSettings(backend=backend)).endswith(f"+{backend}")
    model_dir = packaged_model_dir()
    export_dir = MODEL_CACHE / f"{model_dir.resolve().name}-{model_fingerprint(model_dir)}"
    assert sorted(p.name for p in export_dir.glob("*.onnx")) == ["model-int8.onnx", "model.onnx"]
    mtimes = {p: p.stat().st_mtime_ns for p in export_dir.glob("*.onnx")}
    build_embedding(EmbeddingSettings(backend="onnx-int8"), cache_dir=MODEL_CACHE)
    assert {p: p.stat().st_mtime_ns for p in export_dir.glob("*.onnx")} == mtimes  # reused
    # Quantizing in a fresh process leaves its logging as it was (no root handler installed, so
    # libraries' debug records stay quiet).
    fresh = tmp_path / "fresh" / export_dir.name
    fresh.mkdir(parents=True)
    shutil.copy(export_dir / "model.onnx", fresh / "model.onnx")
    script = (
        "import logging\n"
        "from pathlib import Path\n"
        "from core.embedding.providers import build_embedding\n"
        "from core.settings import EmbeddingSettings\n"
        f"cache = Path({str(fresh.parent)!r})\n"
        "build_embedding(EmbeddingSettings(backend='onnx-int8'), cache_dir=cache)"
        ".get_text_embedding('x')\n"
        "print('handlers', len(logging.getLogger().handlers))\n"
    )
    run = _python(script, timeout=300)
    assert (fresh / "model-int8.onnx").is_file()
    assert "handlers 0" in run.stdout
    assert "pre-processing before quantization" not in run.stderr
    # An export from scratch keeps the tracer's notes out of stderr too.
    again = tmp_path / "again"
    script = script.replace(repr(str(fresh.parent)), repr(str(again)))
    run = _python(script, timeout=300)
    assert (again / export_dir.name / "model-int8.onnx").is_file()
    assert "Warning" not in run.stderr, run.stderr[-2000:]
    # While the quantizer runs, other warnings still reach stderr and debug records stay quiet.
    script = (
        "import logging\n"
        "from core.embedding.onnx import _root_logger_left_alone\n"
        "with _root_logger_left_alone():\n"
        "    logging.getLogger('other').warning('another library warns')\n"
        "    logging.getLogger('bm25s').debug('debug noise')\n"
        "print('handlers', len(logging.getLogger().handlers))\n"
    )
    run = _python(script, timeout=60)
    assert "another library warns" in run.stderr
    assert "debug noise" not in run.stderr + run.stdout
    assert "handlers 0" in run.stdout
    # In a process that configured logging (the app), the quantizer's hint stays out of its log.
    script = (
        "import logging, os\n"
        "from core.embedding.onnx import _root_logger_left_alone\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "where = os.path.join('x', 'onnxruntime', 'quantization', 'quantize.py')\n"
        "hint = logging.LogRecord('root', logging.WARNING, where, 1, 'run pre-processing', None, "
        "None)\n"
        "with _root_logger_left_alone():\n"
        "    logging.getLogger().handle(hint)\n"
        "    logging.getLogger('other').warning('another library warns')\n"
        "logging.getLogger().handle(hint)  # outside the call, left as it was\n"
    )
    run = _python(script, timeout=60)
    assert run.stderr.count("run pre-processing") == 1 and "another library warns" in run.stderr
    # The packaged model reads 512 word pieces unless told otherwise; its own window is 256.
    assert embedding_id(EmbeddingSettings(backend="torch")) == (
        "local:sentence-transformers/all-MiniLM-L6-v2@512"
    )
    assert embedding_id(EmbeddingSettings(backend="torch", max_seq_length=256)) == (
        "local:sentence-transformers/all-MiniLM-L6-v2"
    )


def test_bfloat16_is_the_default_only_on_a_cpu_with_amx(tmp_path, monkeypatch):
    from core.embedding import providers as embeddings

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    assert embeddings.amx_bf16(info)
    # AVX512-BF16 alone (AMD Zen 4) embeds faster in int8 ONNX.
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert not embeddings.amx_bf16(info)
    assert not embeddings.amx_bf16(tmp_path / "absent")  # not Linux: no AMX assumed
    monkeypatch.setattr(embeddings, "amx_bf16", lambda: False)
    assert embeddings.default_backend() == "onnx-int8"
    monkeypatch.setattr(embeddings, "amx_bf16", lambda: True)
    assert embeddings.default_backend() == "torch-bf16"
    from core.settings import EmbeddingSettings

    assert embeddings.batch_of(EmbeddingSettings(), "torch-bf16") == 16
    assert embeddings.batch_of(EmbeddingSettings(), "onnx-int8") == 4
    assert embeddings.batch_of(EmbeddingSettings(), "torch") == 64
    assert embeddings.batch_of(EmbeddingSettings(batch_size=5), "torch-bf16") == 5


def test_a_collection_built_at_the_old_window_is_read_at_that_window(embedded_settings, tmp_path):
    """The packaged model's default window went from 256 to 512: a collection built at 256 keeps
    being read at 256 (its vectors and chunks were made for it) until it is re-embedded."""
    from core.embedding.providers import embedding_id
    from core.index.store import index_embedding, open_index

    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.txt").write_text("The blue ferry leaves at seven.")
    embedded_settings.embedding.max_seq_length = 256
    col, model = open_index(embedded_settings)
    ingest_paths(embedded_settings, col, model, paths=[docs], progress=False)
    assert "@" not in embedding_id(index_embedding(embedded_settings))
    embedded_settings.embedding.max_seq_length = None
    cfg = index_embedding(embedded_settings)
    assert cfg.max_seq_length == 256
    col, model = open_index(embedded_settings)
    assert col.count() == 1
    # a new collection gets the new default
    embedded_settings.chroma.collection = "fresh"
    assert index_embedding(embedded_settings).max_seq_length is None
    assert "@512" in embedding_id(index_embedding(embedded_settings))


def test_a_collection_keeps_the_backend_that_built_it(embedded_settings, tmp_path):
    """Vectors of two backends never mix: an unset backend follows the collection's, and an
    explicit other one is refused with what to do."""
    from core.errors import EmbeddingMismatchError
    from core.index.store import index_embedding, open_index

    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.txt").write_text("The blue ferry leaves at seven.")
    embedded_settings.embedding.backend = "torch"
    col, model = open_index(embedded_settings)
    ingest_paths(embedded_settings, col, model, paths=[docs], progress=False)
    embedded_settings.embedding.backend = None
    col, model = open_index(embedded_settings)
    assert type(model).__name__ == "HuggingFaceEmbedding"
    assert index_embedding(embedded_settings).backend == "torch"  # what every command opens
    embedded_settings.embedding.backend = "onnx-int8"
    with pytest.raises(EmbeddingMismatchError, match="__BACKEND"):
        open_index(embedded_settings)


def test_a_saved_model_folder_exports_like_the_packaged_one(tmp_path):
    """A fine-tuned model is a folder of its own: it is exported from that folder, once, into
    the cache under its own fingerprint, and named apart from the packaged model."""
    import shutil

    import numpy as np

    from core.embedding.providers import build_embedding, embedding_id
    from core.embedding.window import packaged_model_dir
    from core.settings import EmbeddingSettings

    tuned = tmp_path / "tuned-model"
    shutil.copytree(packaged_model_dir(), tuned)
    cache = tmp_path / "cache"
    cfg = EmbeddingSettings(model=str(tuned), backend="onnx-int8")
    model = build_embedding(cfg, cache_dir=cache)
    reference = build_embedding(EmbeddingSettings(model=str(tuned), backend="torch"))
    text = ["The ferry to the island leaves the harbour at seven."]
    a = np.asarray(model.get_text_embedding_batch(text))
    b = np.asarray(reference.get_text_embedding_batch(text))
    assert float(np.sum(a * b)) > 0.95
    assert [p.name for p in cache.glob("tuned-model-*/*.onnx")] != []
    assert embedding_id(cfg).startswith("local:tuned-model@") and embedding_id(cfg).endswith(
        "+onnx-int8"
    )
