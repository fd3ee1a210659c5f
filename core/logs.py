"""Libraries' own log lines, kept off the console where the product says the same thing better."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_QUIETED: dict[str, tuple[int, int]] = {}  # logger -> (calls inside, level before the first)


@contextmanager
def quiet(logger: str, level: int = logging.CRITICAL) -> Iterator[None]:
    """`logger`'s records below `level` off while a call of ours reports its failure instead
    (a parser's warning about the file it is about to refuse, an error it logs and raises).
    Calls may overlap across threads: the level in force before the first is restored after the
    last."""
    log = logging.getLogger(logger)
    with _LOCK:
        inside, before = _QUIETED.get(logger, (0, log.level))
        _QUIETED[logger] = (inside + 1, before)
        log.setLevel(max(level, log.level) if inside else level)
    try:
        yield
    finally:
        with _LOCK:
            inside, before = _QUIETED[logger]
            if inside == 1:
                del _QUIETED[logger]
                log.setLevel(before)
            else:
                _QUIETED[logger] = (inside - 1, before)


def load_bm25s():
    """The bm25s module, its logger at WARNING: it sets its own to DEBUG on import, so every
    index build would print "Building index from tokens" on the console."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return module
