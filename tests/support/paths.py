"""Where things are for the tests: the project root, the shared benchmark data beside it (absent
on a fresh clone), and the ONNX export cache every test and launched app shares."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"

# ONNX exports of the packaged model are made once per machine and shared by every test (and
# every app the tests launch); the cache is keyed by the model's fingerprint.
MODEL_CACHE = Path(tempfile.gettempdir()) / "rag-chat-test-models"
os.environ.setdefault("RAG_EMBEDDING__CACHE_DIR", str(MODEL_CACHE))
