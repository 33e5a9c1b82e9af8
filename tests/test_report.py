"""`cifar-lab report` on a real small multirun, failed jobs included; the Optuna search."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_lab.reports.jobs import Job, ReportError, common_overrides, find_jobs, group_jobs, varying_keys
from cifar_lab.reports.plot import choose_x, plot_figure
from cifar_lab.tasks import cli
from tests.conftest import QUICK_RUN, REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _copy_without_checkpoints(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.ckpt", "tensorboard")))


def _add_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.floors
def test_report_of_a_multirun_with_failed_jobs(small_multirun, tmp_path, capsys):
    sweep = _copy_without_checkpoints(small_multirun, tmp_path / "sweep")
    base = (sweep / "0" / ".hydra" / "overrides.yaml").read_text().splitlines()
    base = [line[2:] for line in base if not line.startswith(("- optimizer.lr=", "- seed="))]
    # a job that died before writing metrics.json, and one that was interrupted
    _add_job(sweep, "4", base + ["optimizer.lr=0.05", "seed=2"], None)
    _add_job(sweep, "5", base + ["optimizer.lr=0.01", "seed=2"], {"status": "interrupted", "test/acc": 0.99})

    out = tmp_path / "report"
    assert cli.main(["report", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "optimizer.lr=0.01" in printed and "optimizer.lr=0.05" in printed
    assert printed.count("FAILED") == 2

    accs: dict[str, list[float]] = {}
    for job in range(4):
        lines = (sweep / str(job) / ".hydra" / "overrides.yaml").read_text().splitlines()
        lr = next(line.split("=")[1] for line in lines if line.startswith("- optimizer.lr="))
        accs.setdefault(lr, []).append(json.loads((sweep / str(job) / "metrics.json").read_text())["test/acc"])
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["optimizer.lr"] for r in rows] == ["0.01", "0.05"]
    for row in rows:
        expected = accs[row["optimizer.lr"]]
        assert int(row["n"]) == 2 and int(row["failed"]) == 1  # the interrupted 0.99 is not averaged
        assert float(row["test/acc mean"]) == pytest.approx(statistics.fmean(expected))
        assert float(row["test/acc std"]) == pytest.approx(statistics.stdev(expected))
        assert float(row["train_time_s mean"]) > 0

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("| setting | n | failed | test acc |")
    assert "| optimizer.lr=0.01 | 2 | 1 |" in markdown
    assert "failed: no metrics.json" in markdown and "status interrupted" in markdown
    assert "`data=synthetic`" in markdown  # settings shared by all jobs are listed once
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)


def test_module_entry_point_writes_next_to_the_jobs(small_multirun, tmp_path):
    sweep = _copy_without_checkpoints(small_multirun, tmp_path / "sweep")
    result = subprocess.run(
        [sys.executable, "-m", "cifar_lab.tasks.report", str(sweep)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "4 jobs" in result.stdout
    assert {p.name for p in sweep.glob("report.*")} == {"report.csv", "report.md", "report.png"}


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, "no jobs found"),
    ],
)
def test_bad_report_path_is_one_line_and_exit_2(tmp_path, capsys, make_path, message):
    assert cli.main(["report", str(make_path(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_console_script_bad_input_has_no_traceback(tmp_path):
    script = Path(sys.executable).with_name("cifar-lab")
    result = subprocess.run([str(script), "report", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'} does not exist"


def _job(path: str, status: str = "completed", acc: float = 0.5, **overrides: str) -> Job:
    return Job(Path(path), dict(overrides), {"test/acc": acc, "status": status}, status)


def test_grouping_and_the_plot_pick_the_swept_parameter():
    jobs = [
        _job(f"{i}", acc=0.1 * i, **{"optimizer.lr": lr, "model": model, "seed": str(seed), "data": "synthetic"})
        for i, (lr, model, seed) in enumerate(
            (lr, model, seed) for lr in ("0.1", "0.01", "1") for model in ("fast", "wide") for seed in (0, 1)
        )
    ]
    groups = group_jobs(jobs)
    assert len(groups) == 6 and all(len(g.jobs) == 2 for g in groups)
    assert varying_keys(groups) == ["model", "optimizer.lr"]
    assert common_overrides(groups) == {"data": "synthetic"}
    assert choose_x(groups) == "optimizer.lr"  # numeric beats categorical
    assert choose_x(groups, "model") == "model"
    with pytest.raises(ReportError, match="not a swept parameter"):
        choose_x(groups, "seed")
    figure = plot_figure(groups)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model=fast", "model=wide"]
    assert ax.get_xscale() == "log"  # 0.01 .. 1


def test_optuna_search_resumes_and_records_a_failed_trial(tmp_path):
    """Launch 1: one trial that fails (batch larger than the data) -> NaN -> a FAIL trial, and
    the command still succeeds. Launch 2, same command: the study resumes from its sqlite file;
    job folder 1 is trial 1. The report lists both."""
    common = [
        sys.executable,
        "train.py",
        "hparams_search=optuna",
        *QUICK_RUN,
        f"paths.log_dir={tmp_path}",
        "hydra.sweeper.n_trials=1",
    ]
    for batch_size in (4096, 64):
        result = subprocess.run(
            common + [f"data.batch_size={batch_size}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "optuna" / "train"
    with sqlite3.connect(sweep / "optuna.db") as db:
        states = [row[0] for row in db.execute("select state from trials order by number")]
    assert states == ["FAIL", "COMPLETE"]
    overrides = (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
    for key in ("optimizer.lr=", "optimizer.weight_decay=", "module.label_smoothing=", "data.batch_size=64"):
        assert key in overrides
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    assert "val/acc_best" in metrics  # what the study maximized

    jobs = find_jobs(sweep)
    assert [(j.path.name, j.failed) for j in jobs] == [("0", True), ("1", False)]
