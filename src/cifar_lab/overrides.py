"""Command-line overrides read with Hydra's own grammar, before Hydra runs.

Hydra answers an override it cannot read (``'optimizer.lr=interval(1.0)'``) with a
three-line parse error and exit status 1, before any cifar_lab code runs. Reading the
overrides first turns that into the project's one ``error:`` line and exit status 2; the
search space (cifar_lab.search.space) reads its dimensions with the same function.
Only Hydra's parser is imported: the answer comes before torch loads.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cifar_lab.errors import ConfigError, exits_on_user_error, one_line

GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic/"

T = TypeVar("T")


def parse_override(line: str) -> Any:
    """Hydra's ``Override`` of ``line``; ConfigError ``cannot read 'LINE' (REASON)`` where the grammar refuses it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides([line])[0]
    except OverrideParseException as err:
        raise ConfigError(f"cannot read '{line}' ({_reason(err.message)})") from None


def _reason(message: str) -> str:
    """The middle of Hydra's message: not its "Error parsing override" line (the line is named
    already), its link, the exception type, nor the grammar's list of expected tokens."""
    lines = [line for line in message.splitlines() if not line.startswith(("Error parsing override", "See http"))]
    text = re.sub(r"^\w+ while evaluating ", "", " ".join(lines))
    return one_line(text.split(" expecting {")[0])


def check_command_line(argv: Sequence[str]) -> None:
    """Each override in ``argv`` (a Hydra app's arguments, flags included) readable, else one ConfigError."""
    from hydra._internal.utils import get_args_parser  # Hydra's own split of flags and overrides

    for line in get_args_parser().parse_args(list(argv)).overrides:
        try:
            parse_override(line)
        except ConfigError as err:
            raise ConfigError(f"{err}; see {GRAMMAR_URL}") from None


def overrides_read_first(hydra_main: Callable[..., T]) -> Callable[..., T]:
    """``hydra_main`` (a ``@hydra.main`` function) that first reads its command line's overrides:
    an unreadable one is one ``error:`` line and exit status 2. With HYDRA_FULL_ERROR=1 Hydra
    answers itself, with the full trace that asks for."""

    @functools.wraps(hydra_main)
    def main(*args: Any, **kwargs: Any) -> T:
        if not args and not kwargs and os.environ.get("HYDRA_FULL_ERROR") != "1":
            with exits_on_user_error():
                check_command_line(sys.argv[1:])
        return hydra_main(*args, **kwargs)

    return main
