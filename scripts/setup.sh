#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with the pinned requirements and the project
# installed in editable mode (its packages and the rag-* commands); with --dev also the test tools
# and Debian's chromium for the browser tests. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "note: chromium is not installed; browser tests will be skipped (apt-get install chromium)" >&2
    fi
  fi
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
# The project itself, editable: app, core, eval, finetune, ingest and rag import from anywhere
# (bench/ included), and the rag-chat, rag-ingest, rag-eval, rag-finetune commands are in .venv/bin.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
