"""CPU work shared fairly between chat sessions: a first-come, first-served gate with a few slots,
so twenty sessions queue for the embedding model instead of thrashing two cores together."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


def default_slots() -> int:
    """One slot per two cores (the embedding model already uses several threads per call)."""
    return max(1, (os.cpu_count() or 2) // 2)


class ComputeGate:
    """At most `slots` holders at a time, admitted strictly in arrival order. Re-entrant per
    thread, so a gated function may call another gated function."""

    def __init__(self, slots: int | None = None):
        self.slots = slots or default_slots()
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._running = 0
        self._ticket = 0
        self._local = threading.local()
        self.waited = 0  # holders that had to queue (for diagnostics and tests)

    @contextmanager
    def hold(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._cond:
            ticket = self._ticket
            self._ticket += 1
            self._queue.append(ticket)
            if self._queue[0] != ticket or self._running >= self.slots:
                self.waited += 1
            try:
                while self._queue[0] != ticket or self._running >= self.slots:
                    self._cond.wait()
            except BaseException:
                # Interrupted while waiting (Ctrl-C, a stopped answer): give the place in line
                # back, or everyone behind this ticket would wait for it forever.
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._running += 1
            self._cond.notify_all()  # the next in line may take a free slot too
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
