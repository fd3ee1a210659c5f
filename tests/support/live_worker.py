"""An app process for the switching test: builds the app's service from the environment, then
answers one question per line of stdin, printing one JSON line per answer."""

from __future__ import annotations

import json
import os
import sys

from app.service import build_service
from core.settings import Settings


def main() -> None:
    service = build_service(Settings())
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        question = line.strip()
        if not question:
            continue
        last = list(service.pipeline.ask(f"worker-{os.getpid()}", question))[-1]
        out = {
            "turn_id": last.turn_id,
            "sources": len(last.sources),
            "badge": service.pipeline.badge,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
