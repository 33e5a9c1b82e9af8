"""`cifar-lab`: the tools around training (`report`, `predict`, `export`).

Each subcommand lives in its own module and imports torch, rich or matplotlib only when it
runs, so `cifar-lab --help` answers at once. A user's mistake (a missing path, a foreign
checkpoint, an unreadable image) prints one ``error:`` line and exits with status 2
(cifar_lab.errors.run_command).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cifar_lab.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    from cifar_lab.tasks import export, predict, report

    parser = argparse.ArgumentParser(prog="cifar-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report_parser = sub.add_parser("report", help="mean ± std table, CSV, Markdown and plot of a sweep's jobs")
    report.add_arguments(report_parser)
    report_parser.set_defaults(func=report.run)
    predict_parser = sub.add_parser("predict", help="classify image files with a trained checkpoint")
    predict.add_arguments(predict_parser)
    predict_parser.set_defaults(func=predict.run)
    export_parser = sub.add_parser("export", help="a checkpoint as an ONNX or TorchScript file that takes raw images")
    export.add_arguments(export_parser)
    export_parser.set_defaults(func=export.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
