"""The whole report of a sweep (a multirun, or all of outputs/): its jobs read and grouped,
report.csv, report.md and report.png written, and the table printed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_lab.reports.jobs import IGNORED_KEYS, Group, Job, common_overrides, find_jobs, group_jobs
from cifar_lab.reports.plot import plot_figure
from cifar_lab.reports.table import rich_table, summarize, to_csv, to_markdown


@dataclass
class Report:
    jobs: list[Job]
    groups: list[Group]
    rows: list[dict[str, Any]]
    common: dict[str, str]
    files: dict[str, Path]


def build_report(
    root: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    metric: str = "test/acc",
    x_key: str | None = None,
    ignore: Sequence[str] = IGNORED_KEYS,
    plot: bool = True,
) -> Report:
    """Read every job under ``root``; write report.csv, report.md and report.png to ``out_dir``."""
    from cifar_lab.runtime.io import atomic_write_bytes

    jobs = find_jobs(root)
    groups = group_jobs(jobs, ignore)
    rows = summarize(groups)
    common = common_overrides(groups)
    out = Path(out_dir) if out_dir is not None else Path(root)
    files = {"csv": out / "report.csv", "markdown": out / "report.md"}
    atomic_write_bytes(files["csv"], to_csv(rows).encode())
    atomic_write_bytes(files["markdown"], to_markdown(rows, jobs, common).encode())
    if plot:
        from cifar_lab.runtime.figures import png_bytes

        files["plot"] = out / "report.png"
        atomic_write_bytes(files["plot"], png_bytes(plot_figure(groups, metric, x_key)))
    return Report(jobs, groups, rows, common, files)


def print_report(report: Report, title: str) -> None:
    """The table, the common overrides, each failed job and the files written, on stdout."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a pipe or a file: no reason to squeeze into 80 columns
        console = Console(width=200)
    console.print(rich_table(report.rows, title=f"{title}: {len(report.jobs)} jobs"))
    if report.common:
        console.print("common: " + " ".join(f"{k}={v}" for k, v in report.common.items()), highlight=False)
    for job in report.jobs:
        if job.failed:
            console.print(f"[red]FAILED[/red] {job.path} ({job.status})", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in report.files.values()), highlight=False)
