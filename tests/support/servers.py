"""Starting and stopping the real servers tests talk to (the app, `chroma run`): a free loopback
port, waiting until one answers (failing with its log when it dies or stalls), stopping it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_up(proc, probe, log_path: Path, what: str, timeout: float) -> None:
    """Wait for a server process to answer `probe`; fail with its log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log_path.read_text()[-3000:]}")
        if probe():
            return
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"{what} did not start within {timeout:.0f} s: {log_path.read_text()[-3000:]}")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
