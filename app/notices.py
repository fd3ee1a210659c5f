"""How the UI reports a handled mistake (an empty question, a wrong password): one warning in the
browser, one line in the server log, no traceback and no error badge left on any component."""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from core.errors import RagError

log = logging.getLogger("app.ui")


def _upload_folders() -> re.Pattern[str]:
    """Where Gradio keeps an uploaded file: its upload folder (GRADIO_TEMP_DIR, else the system's
    temporary folder's `gradio`), then a folder named by the upload's hash, holding the file under
    the name the user gave it."""
    from gradio.utils import get_upload_folder

    root = re.escape(str(get_upload_folder()).rstrip("/\\"))
    return re.compile(root + r"[\\/][0-9a-f]{16,}[\\/]")


def mistake(message: str) -> None:
    """Show `message` as a warning (naming an uploaded file as the user named it, not by the
    folder Gradio keeps it in) and log it as one line, paths whole."""
    log.warning("user mistake: %s", message)
    gr.Warning(_upload_folders().sub("", message))


def refusal(message: str) -> gr.Error:
    """An error to raise where a handler cannot go on (the browser shows it): logged as one line,
    never as a traceback."""
    log.warning("refused: %s", message)
    return gr.Error(message, print_exception=False)


def handled(
    outputs: int, cleared: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For a handler with `outputs` output components: a RagError it raises (a refusal: bad
    input, a missing setting, an unknown id) becomes one warning toast and one log line, and every
    output keeps what it showed (no error badge, no traceback); with `cleared`, every output is
    emptied instead, where what it showed (a report on other inputs) would mislead."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except RagError as exc:
                mistake(str(exc))
                kept = gr.update(value=None) if cleared else gr.skip()
                return kept if outputs == 1 else tuple(kept for _ in range(outputs))

        return run

    return wrap


def check_password(expected: str | None, given: str | None) -> None:
    """RagError("wrong admin password") unless the admin password matches (or none is set)."""
    if expected is not None and not hmac.compare_digest((given or "").encode(), expected.encode()):
        raise RagError("wrong admin password")
