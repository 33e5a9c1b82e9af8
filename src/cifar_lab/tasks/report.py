"""`cifar-lab report PATH`: turn a folder of runs (a multirun, an Optuna sweep, all of
outputs/) into one answer: mean ± std over seeds of every setting, as a table, CSV,
Markdown and a plot.

The arguments and the choice between a sweep's and a study's report; the report itself is
the library cifar_lab.reports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_lab.errors import run_command
from cifar_lab.reports.jobs import IGNORED_KEYS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a multirun, Optuna sweep or outputs folder (searched recursively)")
    parser.add_argument("--out", default=None, help="where report.csv/.md/.png go (default: PATH)")
    parser.add_argument("--metric", default="test/acc", help="what the plot shows (default: test/acc)")
    parser.add_argument("--x", dest="x_key", default=None, help="the swept parameter on the x axis (default: guessed)")
    parser.add_argument(
        "--ignore",
        nargs="*",
        default=list(IGNORED_KEYS),
        help="overrides to average over instead of group by (default: seed)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip report.png")
    parser.add_argument(
        "--storage", default=None, help="an Optuna search's storage URL (default: PATH/optuna.db, if there)"
    )
    parser.add_argument("--study", default=None, help="the study in that storage (default: its only one)")


def run(args: argparse.Namespace) -> int:
    from cifar_lab.reports import search, sweep, trials

    root = Path(args.path)
    if root.is_dir() and search.is_search(root, args.storage):
        out = Path(args.out) if args.out else root
        trials.print_report(search.build_search_report(root, out, args.storage, args.study, not args.no_plot), root)
        return 0
    report = sweep.build_report(args.path, args.out, args.metric, args.x_key, args.ignore, plot=not args.no_plot)
    sweep.print_report(report, title=args.path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m cifar_lab.tasks.report PATH`."""
    parser = argparse.ArgumentParser(prog="python -m cifar_lab.tasks.report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
