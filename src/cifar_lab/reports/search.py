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
from pathlib import Path
from typing import Any

from cifar_lab.reports.jobs import read_overrides
from cifar_lab.reports.plot import plot_trials
from cifar_lab.reports.trials import SearchReport, TrialRow, to_csv, to_markdown
from cifar_lab.search import SearchConfigError, require_optuna
from cifar_lab.search.study import PRUNED_ATTR, TRIAL_KEY

DEFAULT_DB = "optuna.db"
STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
# overrides that made the job a search trial: dropped from the best trial's command line
SEARCH_ONLY = ("hparams_search", TRIAL_KEY)


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
    overrides = read_overrides(root / str(number))
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
