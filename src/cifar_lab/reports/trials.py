"""An Optuna study's report as data (one row per trial) and as text: the table, CSV,
Markdown and the printed summary. Reading the study is search.py's job, drawing it plot.py's."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int | None = None
    test_acc: float | None = None


@dataclass
class SearchReport:
    study_name: str
    direction: str
    rows: list[TrialRow]
    best_command: str | None
    importances: dict[str, float] | None
    importance_note: str | None
    files: dict[str, Path] = field(default_factory=dict)


def _param_names(report: SearchReport) -> list[str]:
    return sorted({name for row in report.rows for name in row.params})


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(report: SearchReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank order, the objective of a pruned trial is its last reported value."""
    names = _param_names(report)
    header = ["trial", "state", "objective", "epochs", "test acc"] + names
    body = []
    for row in report.rows:
        value = _cell(row.value)
        if row.state == "pruned" and row.value is not None:
            value = f"({value} at prune)"
        body.append(
            [str(row.number), row.state, value, _cell(row.epochs), _cell(row.test_acc)]
            + [_cell(row.params.get(n)) for n in names]
        )
    return header, body


def to_csv(report: SearchReport) -> str:
    names = _param_names(report)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", "objective", "epochs", "test/acc"] + names)
    for row in report.rows:
        writer.writerow(
            [
                row.number,
                row.state,
                "" if row.value is None or row.state != "complete" else row.value,
                "" if row.epochs is None else row.epochs,
                "" if row.test_acc is None else row.test_acc,
            ]
            + ["" if row.params.get(n) is None else row.params[n] for n in names]
        )
    return buffer.getvalue()


def counts(report: SearchReport) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in report.rows:
        out[row.state] = out.get(row.state, 0) + 1
    return out


def to_markdown(report: SearchReport) -> str:
    header, body = table(report)
    lines = [
        f"Study `{report.study_name}` ({report.direction}): "
        + ", ".join(f"{n} {state}" for state, n in counts(report).items()),
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    if report.best_command:
        lines += ["", f"Best trial: `{report.best_command}`"]
    if report.importances:
        lines += [
            "",
            "Parameter importances (Optuna): " + ", ".join(f"{k} {v:.3f}" for k, v in report.importances.items()),
        ]
    elif report.importance_note:
        lines += ["", f"Parameter importances: not computed ({report.importance_note})"]
    return "\n".join(lines) + "\n"


def print_report(report: SearchReport, root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    header, body = table(report)
    rich = Table(
        title=f"{root}: study {report.study_name}, " + ", ".join(f"{n} {s}" for s, n in counts(report).items())
    )
    for index, name in enumerate(header):
        rich.add_column(name, justify="left" if index == 1 else "right")
    for row, line in zip(report.rows, body):
        rich.add_row(*line, style={"pruned": "yellow", "complete": None}.get(row.state, "red"))
    console.print(rich)
    console.print(f"best trial: {report.best_command or 'none completed'}", highlight=False)
    if report.importances:
        console.print(
            "importances: " + ", ".join(f"{k} {v:.3f}" for k, v in report.importances.items()), highlight=False
        )
    elif report.importance_note:
        console.print(f"importances: not computed ({report.importance_note})", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in report.files.values()), highlight=False)
