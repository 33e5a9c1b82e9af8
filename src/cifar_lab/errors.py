"""User-facing errors: each one is printed as a single line, without a traceback.

The helpers here are the one way a command turns a bad input into that line and exit status 2
(``exits_on_user_error``) and a library's exception into a short reason inside it (``one_line``):
no torch, so config checks can use them before anything heavy is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

# the exit status of a usage error (what argparse exits with): bad config, data or checkpoint
EXIT_USAGE = 2
# the status of a command stopped with Ctrl-C (128 + SIGINT, what a shell reports)
EXIT_INTERRUPTED = 130
# how much of a library's message a reason keeps: the error line must stay readable
REASON_CHARS = 100

T = TypeVar("T")


class CifarLabError(Exception):
    """Base class for errors caused by the user's input (config, data, checkpoint)."""


class ConfigError(CifarLabError, ValueError):
    """A config value is invalid: the one class for a bad value, whether the command-line check
    or the constructor that receives it finds it (cifar_lab.config holds the rules)."""


class DataError(CifarLabError, ValueError):
    """The data itself (files, archives, arrays) is missing, unreadable or malformed."""


class CheckpointError(CifarLabError):
    """A checkpoint is missing, unreadable, unsafe, or does not fit the run."""


class NonFiniteLossError(CifarLabError):
    """The training loss became NaN or infinite: the run is stopped, no checkpoint of it kept."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def one_line(exc: object, limit: int | None = REASON_CHARS) -> str:
    """``exc``'s text on one line (its type name when it has none), cut to ``limit`` characters.

    Libraries write whole paragraphs (torch's zip reader, tarfile's four attempts); inside an
    error line only their first words help, so a long text ends in "..."; ``limit=None`` keeps it whole.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


class UserErrorExit(SystemExit):
    """The exit of :func:`exits_on_user_error` (status 2): a SystemExit, so uncaught it ends the
    process like ``sys.exit(2)``; its own type lets `cifar-lab` return the status instead."""


@contextmanager
def exits_on_user_error() -> Iterator[None]:
    """Run the block (or, as a decorator, the function); a CifarLabError in it is printed as the
    one stderr line ``error: <err>`` and ends the process with exit status 2 (UserErrorExit).

    The one place that line is written: every entry point (train.py, eval.py, `cifar-lab`, the
    Optuna sweeper, the override check) runs under it, so a bad input reads the same everywhere.
    """
    try:
        yield
    except CifarLabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise UserErrorExit(EXIT_USAGE) from None


def run_command(command: Callable[[T], int], args: T) -> int:
    """``command(args)``'s exit status, a user error's being 2 (after its line) and Ctrl-C's 130:
    a `cifar-lab` subcommand returns its status, as the console script's ``sys.exit(main())`` wants."""
    try:
        with exits_on_user_error():
            return command(args)
    except UserErrorExit:
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
