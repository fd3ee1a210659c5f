"""Libraries' own log lines, kept off the console where the product says the same thing better."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet(logger: str, level: int = logging.CRITICAL) -> Iterator[None]:
    """`logger`'s records below `level` off while a call of ours reports its failure instead
    (a parser's warning about the file it is about to refuse, an error it logs and raises)."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def load_bm25s():
    """The bm25s module, its logger at WARNING: it sets its own to DEBUG on import, so every
    index build would print "Building index from tokens" on the console."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return module
