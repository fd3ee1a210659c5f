"""How the UI reports a handled mistake (an empty question, a wrong password): one warning in the
browser, one line in the server log, no traceback and no error badge left on any component."""

from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("app.ui")


def mistake(message: str) -> None:
    """Show `message` as a warning and log it as one line."""
    log.warning("user mistake: %s", message)
    gr.Warning(message)


def refusal(message: str) -> gr.Error:
    """An error to raise where a handler cannot go on (the browser shows it): logged as one line,
    never as a traceback."""
    log.warning("refused: %s", message)
    return gr.Error(message, print_exception=False)
