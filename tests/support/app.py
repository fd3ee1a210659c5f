"""The app under test: `python -m app` started on a data directory, and Debian's chromium for the
browser tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support.paths import ROOT
from tests.support.servers import free_port, port_open, wait_until_up

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start_app(data, log_path, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m app` on an empty data directory with `env` added, up and listening; its output
    goes to `log_path`. Returns the process and its URL."""
    port = free_port()
    env = {**os.environ, "RAG_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1", **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_until_up(proc, lambda: port_open(port), log_path, "the app", 120)
    return proc, f"http://127.0.0.1:{port}/"


def launch_browser(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    )
