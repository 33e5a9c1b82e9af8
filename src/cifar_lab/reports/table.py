"""The report's table: one row per setting with n, failed and mean ± std over seeds of every
metric, and that table as CSV (every number), Markdown (what a PR or notebook shows) and rich."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from typing import Any

from cifar_lab.reports.jobs import Group, Job, setting_label, varying_keys

# (metrics.json key, column title); the first is what the plot shows by default
METRICS: tuple[tuple[str, str], ...] = (
    ("test/acc", "test acc"),
    ("val/acc_best", "val acc (best)"),
    ("test/auroc", "test AUROC"),
    ("val/auroc", "val AUROC"),
    ("train_time_s", "train time (s)"),
)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (0 for one value, None for none): what every cell and plot point shows."""
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
            row[f"{metric} mean"], row[f"{metric} std"] = mean_std(group.values(metric))
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
