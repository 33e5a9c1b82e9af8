"""`cifar-lab report` on an Optuna search folder: every trial sorted by objective with its
state and parameters, the best trial's command line, a plot of the objective per trial with
the best-so-far line, and Optuna's parameter importances where it can compute them.

The study (storage) is the truth about states and values; the job folders (trial N in
folder N) add the command line and the test accuracy. Pruned trials are listed with the
epoch they stopped at and never enter the best-so-far line or any comparison with complete ones.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_lab.search import SearchConfigError, require_optuna
from cifar_lab.search.study import PRUNED_ATTR, TRIAL_KEY

DEFAULT_DB = "optuna.db"
STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
# overrides that made the job a search trial: dropped from the best trial's command line
SEARCH_ONLY = ("hparams_search", TRIAL_KEY)


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


def is_search(root: Path, storage: str | None) -> bool:
    return storage is not None or (root / DEFAULT_DB).is_file()


def _load_study(root: Path, storage: str | None, study_name: str | None) -> Any:
    optuna = require_optuna()
    url = storage or f"sqlite:///{(root / DEFAULT_DB).resolve()}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise SearchConfigError(
                f"{url} holds {len(names)} studies ({', '.join(names) or 'none'}): pick one with --study NAME"
            )
        study_name = names[0]
    elif study_name not in names:
        raise SearchConfigError(f"no study {study_name!r} in {url} (it holds: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=url)


def _job_metrics(root: Path, number: int) -> dict[str, Any]:
    from cifar_lab.runtime.run_folder import RunFolder

    try:
        return RunFolder(root / str(number)).read_metrics()
    except (OSError, ValueError):  # none, unreadable, or not an object
        return {}


def _command(root: Path, number: int, params: dict[str, Any]) -> str:
    """`python train.py ...` repeating trial ``number`` as a single run."""
    from cifar_lab.tasks.report import _read_overrides

    overrides = _read_overrides(root / str(number))
    if not overrides:  # no job folder: the parameters alone
        overrides = {key: repr(v) if isinstance(v, float) else str(v) for key, v in params.items()}
    kept = [f"{key}={value}" for key, value in overrides.items() if key not in SEARCH_ONLY]
    return " ".join(["python", "train.py"] + [shlex.quote(o) for o in kept])


def _sort_key(row: TrialRow, maximize: bool) -> tuple:
    order = {"complete": 0, "pruned": 1}.get(row.state, 2)
    value = row.value if row.value is not None else -math.inf if maximize else math.inf
    return order, -value if maximize else value, row.number


def _importances(study: Any) -> tuple[dict[str, float] | None, str | None]:
    optuna = require_optuna()
    try:
        return dict(optuna.importance.get_param_importances(study)), None
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as err:
        return None, f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"


def build_search_report(
    root: Path, out: Path, storage: str | None = None, study_name: str | None = None, plot: bool = True
) -> SearchReport:
    """Read the study and its job folders; write report.csv, report.md and report.png to ``out``."""
    from cifar_lab.runtime.io import atomic_write_bytes

    study = _load_study(root, storage, study_name)
    maximize = study.direction.name == "MAXIMIZE"
    rows = []
    for trial in study.get_trials(deepcopy=False):
        metrics = _job_metrics(root, trial.number)
        state = STATE_NAMES.get(trial.state.name, trial.state.name.lower())
        value = (
            trial.value
            if state == "complete"
            else trial.intermediate_values.get(trial.last_step)
            if (state == "pruned" and trial.last_step is not None)
            else None
        )
        epochs = trial.user_attrs.get(PRUNED_ATTR) if state == "pruned" else metrics.get("epochs")
        rows.append(TrialRow(trial.number, state, value, dict(trial.params), epochs, metrics.get("test/acc")))
    rows.sort(key=lambda r: _sort_key(r, maximize))
    complete = [r for r in rows if r.state == "complete"]
    best_command = _command(root, complete[0].number, complete[0].params) if complete else None
    importances, note = _importances(study) if len(complete) >= 2 else (None, "fewer than 2 complete trials")
    report = SearchReport(study.study_name, study.direction.name.lower(), rows, best_command, importances, note)
    out.mkdir(parents=True, exist_ok=True)
    report.files = {"csv": out / "report.csv", "markdown": out / "report.md"}
    atomic_write_bytes(report.files["csv"], to_csv(report).encode())
    atomic_write_bytes(report.files["markdown"], to_markdown(report).encode())
    if plot:
        from cifar_lab.runtime.figures import png_bytes

        report.files["plot"] = out / "report.png"
        atomic_write_bytes(report.files["plot"], png_bytes(plot_trials(report)))
    return report


# -- rendering -------------------------------------------------------------------------------
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
    import csv
    import io

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


def plot_trials(report: SearchReport) -> Any:
    """Objective per trial number: complete trials as dots with the best-so-far line,
    pruned ones as crosses at their last reported value (kept apart from the line)."""
    from cifar_lab.runtime.figures import new_figure

    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    maximize = report.direction == "maximize"
    done = sorted((r.number, r.value) for r in report.rows if r.state == "complete" and r.value is not None)
    pruned = sorted((r.number, r.value) for r in report.rows if r.state == "pruned" and r.value is not None)
    if done:
        ax.plot([n for n, _ in done], [v for _, v in done], "o", color="tab:blue", label="complete")
        best, line = None, []
        for _, value in done:
            best = value if best is None else (max(best, value) if maximize else min(best, value))
            line.append(best)
        ax.step([n for n, _ in done], line, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([n for n, _ in pruned], [v for _, v in pruned], "x", color="tab:gray", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.grid(alpha=0.3)
    ax.set_title(f"study {report.study_name}", fontsize=9)
    if done or pruned:
        ax.legend(fontsize=8)
    return figure


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


def run_search(root: Path, out: Path | None, storage: str | None, study_name: str | None, plot: bool) -> int:
    report = build_search_report(root, out or root, storage, study_name, plot)
    print_report(report, root)
    return 0
