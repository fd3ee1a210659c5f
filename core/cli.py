"""What every command line shares: logging, the settings, one subcommand run, and a RagError
turned into `error: ...` on stderr with exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from core.errors import RagError

if TYPE_CHECKING:
    from core.settings import Settings


def run_command(
    parser: argparse.ArgumentParser,
    commands: Mapping[str, Callable[[Settings, argparse.Namespace], int]],
    argv: list[str] | None = None,
) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    from core.settings import Settings

    try:
        return commands[args.command](Settings(), args)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
