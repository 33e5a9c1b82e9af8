"""User-facing errors: each one is printed as a single line, without a traceback.

The helpers here are the one way a command turns a bad input into that line (``print_error``) and
a library's exception into a short reason inside it (``one_line``): no torch, so config
checks can use them before anything heavy is imported.
"""

from __future__ import annotations

import sys

# the exit status of a usage error (what argparse exits with): bad config, data or checkpoint
EXIT_USAGE = 2
# how much of a library's message a reason keeps: the error line must stay readable
REASON_CHARS = 100


class CifarLabError(Exception):
    """Base class for errors caused by the user's input (config, data, checkpoint)."""


class ConfigError(CifarLabError, ValueError):
    """The composed Hydra config is invalid."""


class DataError(CifarLabError, ValueError):
    """The data source is missing, unreadable or malformed."""


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


def print_error(err: BaseException | str) -> int:
    """Print ``error: <err>`` as the one stderr line of a bad input; return the exit status (2)."""
    print(f"error: {err}", file=sys.stderr)
    return EXIT_USAGE
