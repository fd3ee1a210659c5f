"""What every command line shares (python -m app | ingest | ingest.reembed | eval | finetune |
finetune.embedding): the offline environment, logging, the settings built once, one command run,
and a RagError (or settings that do not validate) turned into `error: ...` on stderr with exit
code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import RagError
from core.offline import stay_offline

if TYPE_CHECKING:
    from core.settings import Settings

Command = Callable[["Settings", argparse.Namespace], int]
T = TypeVar("T")
FEEDBACK = ("all", "any", "up", "down", "none")  # as the chat log filters turns by their rating


def add_turn_filters(parser: Any, scope: str = "") -> None:
    """`--since` and `--feedback`, the filters every command that reads logged turns takes
    (`scope` prefixes their help: the option they refine)."""
    parser.add_argument("--since", help=f"{scope}only turns at or after this ISO date/time")
    parser.add_argument(
        "--feedback",
        choices=FEEDBACK,
        default="all",
        help=f"{scope}all (the default): every turn; any: rated turns; up/down: that rating; "
        "none: unrated",
    )


def request_from(args: argparse.Namespace, cls: type[T], **overrides: Any) -> T:
    """A service's request dataclass from parsed options: each field from the option of the same
    name, `overrides` for the rest (options named otherwise, values parsed first)."""
    import dataclasses

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if hasattr(args, f.name)
    }
    return cls(**{**values, **overrides})


def run_command(
    parser: argparse.ArgumentParser,
    commands: Mapping[str, Command],
    argv: list[str] | None = None,
    default: str | None = None,
) -> int:
    """Parse `argv`, build the settings and run the chosen command (`args.command`, else
    `default`); returns its exit code."""
    stay_offline()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    name = getattr(args, "command", None) or default
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(
            f"error: the settings (RAG_* variables, .env) do not validate: {exc}", file=sys.stderr
        )
        return 2
    try:
        return commands[name](settings, args)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
