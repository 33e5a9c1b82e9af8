"""`cifar-lab report PATH`: turn a folder of runs (a multirun, an Optuna sweep, all of
outputs/) into one answer: mean ± std over seeds of every setting, as a table, CSV,
Markdown and a plot.

Only the standard library is imported at module level: rich and matplotlib load when used.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_lab.errors import CifarLabError
from cifar_lab.runtime.run_folder import HYDRA_DIR, LR_FIND_FILE, METRICS_FILE, MetricsNotAnObject, RunFolder, RunStatus

# (metrics.json key, column title); the first is what the plot shows by default
METRICS: tuple[tuple[str, str], ...] = (
    ("test/acc", "test acc"),
    ("val/acc_best", "val acc (best)"),
    ("test/auroc", "test AUROC"),
    ("val/auroc", "val AUROC"),
    ("train_time_s", "train time (s)"),
)
IGNORED_KEYS = ("seed",)
# more settings than this are drawn as points without a legend (an Optuna search)
MAX_LINES = 8


class ReportError(CifarLabError):
    """Nothing to report: a missing folder, or no jobs in it."""


@dataclass
class Job:
    """One run folder: its command-line overrides, metrics and whether it completed."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any]
    status: str  # "completed", or why not

    @property
    def failed(self) -> bool:
        return self.status != RunStatus.COMPLETED


@dataclass
class Group:
    """The jobs that share every override except the ignored ones (the seed)."""

    key: tuple[tuple[str, str], ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if not job.failed]

    def values(self, metric: str) -> list[float]:
        out = []
        for job in self.completed:
            value = job.metrics.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append(float(value))
        return out


# -- finding jobs ----------------------------------------------------------------------------
def _read_overrides(job_dir: Path) -> dict[str, str]:
    """``key=value`` lines of .hydra/overrides.yaml as a dict ('+'/'++' prefixes dropped)."""
    path = RunFolder(job_dir).overrides
    if not path.is_file():
        return {}
    import yaml  # comes with Hydra (omegaconf)

    try:
        entries = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    overrides: dict[str, str] = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if sep:
            overrides[key.lstrip("+~")] = value
    return overrides


def _read_job(job_dir: Path) -> Job | None:
    folder = RunFolder(job_dir)
    overrides = _read_overrides(job_dir)
    if not folder.metrics.is_file():
        return Job(job_dir, overrides, {}, "failed: no metrics.json")
    try:
        metrics = folder.read_metrics()
    except MetricsNotAnObject:
        return Job(job_dir, overrides, {}, "failed: metrics.json is not an object")
    except (OSError, ValueError) as err:
        return Job(job_dir, overrides, {}, f"failed: unreadable metrics.json ({err.__class__.__name__})")
    if metrics.get("kind") == "eval":
        return None  # an eval of a checkpoint, not a training job
    status = str(metrics.get("status", RunStatus.COMPLETED.value))
    return Job(job_dir, overrides, metrics, status if status == RunStatus.COMPLETED else f"failed: status {status}")


def find_jobs(root: str | os.PathLike) -> list[Job]:
    """Every job folder under ``root`` (itself included): one with a metrics.json, or a
    Hydra job folder (.hydra/) without one, which is a job that died before writing it. An lr
    sweep's folder (tune=lr_find: lr_find.json, no metrics.json) trained nothing: not a job."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"{root} does not exist")
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder")
    jobs = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        if LR_FIND_FILE in files and METRICS_FILE not in files:
            dirs[:] = []
            continue
        if METRICS_FILE in files or HYDRA_DIR in dirs:
            job = _read_job(here)
            if job is not None:
                jobs.append(job)
            dirs[:] = []  # checkpoints/, tensorboard/ ... hold no further jobs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    if not jobs:
        raise ReportError(f"no jobs found under {root} (no metrics.json, no .hydra folder)")
    return sorted(jobs, key=lambda job: _natural_key(str(job.path)))


# -- grouping --------------------------------------------------------------------------------
def _natural_key(text: str) -> tuple:
    """Sort '10' after '9' and numbers by value: job folders and swept values read in order."""
    parts: list[Any] = []
    for chunk in text.replace("/", " / ").split():
        try:
            parts.append((0, float(chunk), ""))
        except ValueError:
            parts.append((1, 0.0, chunk))
    return tuple(parts)


def group_jobs(jobs: Iterable[Job], ignore: Sequence[str] = IGNORED_KEYS) -> list[Group]:
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k not in ignore))
        groups.setdefault(key, Group(key)).jobs.append(job)
    return sorted(groups.values(), key=lambda g: tuple((k, _natural_key(v)) for k, v in g.key))


def varying_keys(groups: Sequence[Group]) -> list[str]:
    """Override keys whose value differs between groups (or is missing from some)."""
    keys: dict[str, set[str | None]] = {}
    all_keys = {k for g in groups for k, _ in g.key}
    for key in sorted(all_keys):
        keys[key] = {dict(g.key).get(key) for g in groups}
    return [k for k, values in keys.items() if len(values) > 1]


def common_overrides(groups: Sequence[Group]) -> dict[str, str]:
    varying = set(varying_keys(groups))
    return {k: v for k, v in groups[0].key if k not in varying} if groups else {}


def setting_label(group: Group, keys: Sequence[str]) -> str:
    settings = dict(group.key)
    label = " ".join(f"{k}={settings.get(k, '-')}" for k in keys)
    return label or "(all jobs)"


# -- the table -------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per group: its varying settings, n, failed, and mean/std of every metric."""
    keys = varying_keys(groups)
    rows = []
    for group in groups:
        settings = dict(group.key)
        row: dict[str, Any] = {"setting": setting_label(group, keys)}
        row.update({k: settings.get(k, "") for k in keys})
        row["n"] = len(group.completed)
        row["failed"] = len(group.jobs) - len(group.completed)
        for metric, _ in METRICS:
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(group.values(metric))
        rows.append(row)
    return rows


def _format(metric: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    digits = 1 if metric.endswith("_s") else 4
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _display_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["setting", "n", "failed"] + [title for _, title in METRICS]
    body = [
        [row["setting"], str(row["n"]), str(row["failed"])]
        + [_format(m, row[f"{m} mean"], row[f"{m} std"]) for m, _ in METRICS]
        for row in rows
    ]
    return header, body


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], jobs: Sequence[Job], common: dict[str, str]) -> str:
    header, body = _display_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in body]
    notes = []
    if common:
        notes.append("Common to all jobs: " + " ".join(f"`{k}={v}`" for k, v in common.items()))
    notes.append("mean ± std over seeds; n counts completed jobs.")
    notes += [f"- failed: `{job.path}` ({job.status})" for job in jobs if job.failed]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def rich_table(rows: Sequence[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    header, body = _display_rows(rows)
    table = Table(title=title)
    for index, name in enumerate(header):
        if index == 0:
            table.add_column(name, overflow="fold", min_width=16)
        else:
            table.add_column(name, justify="right")
    for row, line in zip(rows, body):
        style = "red" if row["failed"] and not row["n"] else ("yellow" if row["failed"] else None)
        table.add_row(*line, style=style)
    return table


# -- the plot --------------------------------------------------------------------------------
def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def choose_x(groups: Sequence[Group], requested: str | None = None) -> str | None:
    """The swept parameter for the x axis: the requested one, else the numeric varying key
    with the most distinct values, else any varying key."""
    keys = varying_keys(groups)
    if requested:
        if requested not in keys:
            raise ReportError(f"--x {requested}: not a swept parameter here (swept: {', '.join(keys) or 'none'})")
        return requested

    def distinct(key: str) -> int:
        return len({dict(g.key).get(key) for g in groups})

    numeric = [k for k in keys if all(_as_float(dict(g.key).get(k)) is not None for g in groups)]
    candidates = numeric or keys
    return max(candidates, key=distinct) if candidates else None


def plot_figure(groups: Sequence[Group], metric: str = "test/acc", x_key: str | None = None) -> Any:
    """``metric`` (mean ± std) against the swept parameter, one line per other setting."""
    from cifar_lab.runtime.figures import new_figure

    x_key = choose_x(groups, x_key)
    others = [k for k in varying_keys(groups) if k != x_key]
    lines: dict[str, list[tuple[Any, float, float]]] = {}
    for group in groups:
        mean, std = _mean_std(group.values(metric))
        if mean is None:
            continue
        settings = dict(group.key)
        label = " ".join(f"{k}={settings.get(k, '-')}" for k in others) or metric
        x_value = settings.get(x_key, "-") if x_key else "all jobs"
        lines.setdefault(label, []).append((x_value, mean, std))

    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    numeric = x_key is not None and all(_as_float(x) is not None for pts in lines.values() for x, _, _ in pts)
    categories = sorted({x for pts in lines.values() for x, _, _ in pts}, key=_natural_key)
    # an Optuna search makes one setting per trial: points, not a legend of a hundred lines
    many = len(lines) > MAX_LINES
    for label, points in sorted(lines.items()):
        points.sort(key=lambda p: _as_float(p[0]) if numeric else categories.index(p[0]))
        xs = [_as_float(p[0]) if numeric else categories.index(p[0]) for p in points]
        ax.errorbar(
            xs,
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=4,
            label=None if many else label,
            linestyle="none" if many else "-",
            color="tab:blue" if many else None,
            alpha=0.7 if many else 1.0,
        )
    if numeric:
        values = [_as_float(x) for x in categories]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x_key or "")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if many:
        ax.set_title(f"{len(lines)} settings of {', '.join(others)}", fontsize=8)
    elif lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no completed job logged {metric}", ha="center", va="center", transform=ax.transAxes)
    return figure


# -- the whole report ------------------------------------------------------------------------
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
    from rich.console import Console

    from cifar_lab.search.report import is_search, run_search

    if Path(args.path).is_dir() and is_search(Path(args.path), args.storage):
        out = Path(args.out) if args.out else None
        return run_search(Path(args.path), out, args.storage, args.study, plot=not args.no_plot)
    report = build_report(args.path, args.out, args.metric, args.x_key, args.ignore, plot=not args.no_plot)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no reason to squeeze into 80 columns
        console = Console(width=200)
    console.print(rich_table(report.rows, title=f"{args.path}: {len(report.jobs)} jobs"))
    if report.common:
        console.print("common: " + " ".join(f"{k}={v}" for k, v in report.common.items()), highlight=False)
    for job in report.jobs:
        if job.failed:
            console.print(f"[red]FAILED[/red] {job.path} ({job.status})", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in report.files.values()), highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m cifar_lab.tasks.report PATH`."""
    from cifar_lab.tasks.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m cifar_lab.tasks.report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
