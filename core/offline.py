"""The product never phones home: no hub look-ups for models or data sets, no telemetry of the
libraries it uses. One place sets that environment; every entry point (the CLIs through
core.cli, the benches, the tests) calls `stay_offline()` before those libraries load."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never ask the hub for models
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",  # datasets: hub names are read from the local cache only
    "ANONYMIZED_TELEMETRY": "False",  # chromadb
    "GRADIO_ANALYTICS_ENABLED": "False",
    "RAGAS_DO_NOT_TRACK": "true",
}


def stay_offline() -> None:
    """Set the offline environment, leaving any variable the user set as it is."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
