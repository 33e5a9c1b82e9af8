"""hparams_search=optuna: the search space, the sweeper's ask-and-tell loop (fake launcher),
pruning in real jobs (in-process and through submitit's subprocess launcher), the search
report, and training without Optuna installed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus

from cifar_lab.search import SearchConfigError
from cifar_lab.search.space import parse_space
from cifar_lab.search.study import PRUNED_ATTR, make_pruner, make_sampler
from cifar_lab.tasks import cli
from hydra_plugins.cifar_lab_optuna_sweeper.sweeper import OptunaSweeper
from tests.conftest import QUICK_RUN, REPO_ROOT

D = optuna.distributions


# -- the search space ------------------------------------------------------------------------
@pytest.mark.floors
@pytest.mark.parametrize(
    "text, expected, sample, override",
    [
        ("interval(0.0, 0.3)", D.FloatDistribution(0.0, 0.3), 0.25, "k=0.25"),
        ("tag(log, interval(1e-5, 2e-3))", D.FloatDistribution(1e-5, 2e-3, log=True), 1e-4, "k=0.0001"),
        ("tag(int, interval(1, 8))", D.IntDistribution(1, 8), 3, "k=3"),
        ("tag(log, int, interval(16, 256))", D.IntDistribution(16, 256, log=True), 64, "k=64"),
        ("choice(128, 256, 512)", D.CategoricalDistribution([128, 256, 512]), 256, "k=256"),
        ("sgd,adamw", D.CategoricalDistribution(["sgd", "adamw"]), "adamw", "k=adamw"),
        (
            "choice([16,64,64],[32,128,128])",
            D.CategoricalDistribution(["[16,64,64]", "[32,128,128]"]),
            "[32,128,128]",
            "k=[32,128,128]",
        ),
        ("range(1, 10, 3)", D.IntDistribution(1, 7, step=3), 4, "k=4"),
        ("range(0.1, 0.5, 0.2)", D.FloatDistribution(0.1, 0.3, step=0.2), 0.3, "k=0.3"),
    ],
)
def test_each_sweep_form_becomes_its_distribution(text, expected, sample, override):
    space = parse_space({"k": text}, [])
    dimension = space.dimensions["k"]
    assert dimension.distribution == expected
    assert dimension.override(sample) == override


def test_command_line_replaces_fixes_and_passes_overrides():
    params = {
        "optimizer.lr": "tag(log, interval(0.01, 1))",
        "data.batch_size": "choice(128, 256)",
        "module.label_smoothing": "interval(0, 0.3)",
        "seed": "3",
    }
    space = parse_space(params, ["data=synthetic", "optimizer.lr=interval(0.1, 0.2)", "data.batch_size=64"])
    assert set(space.dimensions) == {"optimizer.lr", "module.label_smoothing"}
    assert space.dimensions["optimizer.lr"].distribution == D.FloatDistribution(0.1, 0.2)
    assert space.fixed == ("seed=3", "data=synthetic", "data.batch_size=64")
    overrides = space.job_overrides({"optimizer.lr": 0.15, "module.label_smoothing": 0.1})
    assert overrides == [
        "seed=3",
        "data=synthetic",
        "data.batch_size=64",
        "module.label_smoothing=0.1",
        "optimizer.lr=0.15",
    ]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"optimizer.lr": "interval(0.1"}, "cannot read 'optimizer.lr=interval(0.1'"),
        ({"optimizer.lr": "interval(0.5, 0.1)"}, "the interval is empty"),
        ({"optimizer.lr": "tag(log, interval(0, 1))"}, "hydra.sweeper.params.optimizer.lr"),
        ({"optimizer.lr": "tag(loog, interval(0.1, 1))"}, "unknown tag 'loog'"),
        ({"data.batch_size": "tag(log, choice(1, 2))"}, "only interval(...) takes the log tag"),
        ({"data.batch_size": "range(5, 1, 1)"}, "holds no value"),
        ({}, "nothing to search"),
    ],
)
def test_a_malformed_space_says_what_to_write(params, message):
    with pytest.raises(SearchConfigError, match="write|nothing to search") as err:
        parse_space(params, [])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_sampler_or_pruner_or_option_names_the_choices():
    with pytest.raises(SearchConfigError, match="choose one of tpe, random"):
        make_sampler("tpee", None, seed=0)
    with pytest.raises(SearchConfigError, match="choose one of median, .*none"):
        make_pruner("medain", None)
    with pytest.raises(SearchConfigError, match="pruner_options.median.warmup: MedianPruner takes no such option"):
        make_pruner("median", {"median": {"warmup": 1}})
    assert isinstance(make_pruner("none", {"median": {"n_warmup_steps": 1}}), optuna.pruners.NopPruner)
    assert isinstance(make_sampler("tpe", {"tpe": {"n_startup_trials": 3}}, seed=1), optuna.samplers.TPESampler)


# -- the sweeper's loop, with a launcher that runs no training ---------------------------------
class FakeLauncher:
    """Returns a value per job from ``outcome(number, overrides)``; "prune" marks the trial
    pruned in the storage as a real job's pruning callback does."""

    def __init__(self, storage: str, study_name: str, outcome) -> None:
        self.storage, self.study_name, self.outcome = storage, study_name, outcome
        self.launches: list[tuple[int, list[list[str]]]] = []

    def launch(self, job_overrides, initial_job_idx):
        self.launches.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for overrides in job_overrides:
            number = int(next(o for o in overrides if o.startswith("+optuna_trial=")).split("=")[1])
            value = self.outcome(number, overrides)
            if value == "prune":
                study = optuna.load_study(study_name=self.study_name, storage=self.storage)
                trial = optuna.trial.Trial(
                    study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
                )
                trial.report(0.1, step=1)
                trial.set_user_attr(PRUNED_ATTR, 1)
                value = 0.1
            if value == "crash":
                returns.append(JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=RuntimeError("x")))
            else:
                returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=value))
        return returns


def _sweeper(tmp_path: Path, outcome, n_trials: int = 3, **kwargs) -> tuple[OptunaSweeper, FakeLauncher]:
    storage = f"sqlite:///{tmp_path / 'sub' / 'study.db'}"
    sweeper = OptunaSweeper(
        study_name="s",
        storage=storage,
        n_trials=n_trials,
        seed=0,
        pruner="none",
        params={"optimizer.lr": "tag(log, interval(0.01, 1))"},
        **kwargs,
    )
    sweeper.launcher = FakeLauncher(storage, "s", outcome)
    return sweeper, sweeper.launcher


def _states(tmp_path: Path) -> list[str]:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'sub' / 'study.db'}")
    return [t.state.name for t in study.trials]


def test_nan_and_crashed_trials_are_fail_and_the_study_goes_on(tmp_path):
    outcomes = {0: float("nan"), 1: "crash", 2: 0.5, 3: "prune"}
    sweeper, launcher = _sweeper(tmp_path, lambda n, _: outcomes[n], n_trials=4)
    sweeper.sweep(["data=synthetic"])
    assert _states(tmp_path) == ["FAIL", "FAIL", "COMPLETE", "PRUNED"]
    assert [idx for idx, _ in launcher.launches] == [0, 1, 2, 3]  # job folder N is trial N
    assert all("data=synthetic" in jobs[0] for _, jobs in launcher.launches)


@pytest.mark.floors
def test_a_rerun_continues_the_study_and_its_trial_numbers(tmp_path):
    first, _ = _sweeper(tmp_path, lambda n, o: 0.1 * n, n_trials=2)
    first.sweep([])
    again, launcher = _sweeper(tmp_path, lambda n, o: 0.1 * n, n_trials=2, n_jobs=2)
    again.sweep([])
    assert launcher.launches[0][0] == 2 and len(launcher.launches[0][1]) == 2
    assert [jobs[-1] for jobs in launcher.launches[0][1]] == ["+optuna_trial=2", "+optuna_trial=3"]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'sub' / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    assert len(set(lrs)) == 4  # the continued study did not propose its first trials again


def test_a_bad_sweeper_setting_is_one_error_line(tmp_path, capsys):
    sweeper, launcher = _sweeper(tmp_path, lambda n, o: 0.5)
    sweeper.pruner = "medain"
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep([])
    assert stop.value.code == 2 and not launcher.launches
    err = capsys.readouterr().err
    assert err.startswith("error: hydra.sweeper.pruner='medain' is unknown") and err.count("\n") == 1


# -- real jobs: pruning in this process and through a subprocess launcher ----------------------
SEARCH = [
    sys.executable,
    "train.py",
    "hparams_search=optuna",
    "data=synthetic",
    "model=seed_cnn",
    "trainer=cpu",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=2",
    "logger=none",
    "callbacks=none",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.pruner=threshold",
    # every val/acc is below 1.01: the pruner stops each trial at its first report (epoch 1)
    "++hydra.sweeper.pruner_options.threshold.lower=1.01",
]


def _check_pruned_study(sweep: Path) -> None:
    with sqlite3.connect(sweep / "optuna.db") as db:
        states = [row[0] for row in db.execute("select state from trials order by number")]
    assert states == ["PRUNED", "PRUNED"]
    for number in (0, 1):
        metrics = json.loads((sweep / str(number) / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["pruned_epoch"] == 1
        assert metrics["epochs"] == 1  # of the 3 asked
        assert "test/acc" not in metrics  # a pruned trial gets no test pass


def test_pruning_stops_trials_early_in_process(tmp_path):
    result = subprocess.run(
        SEARCH + [f"paths.log_dir={tmp_path}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_pruned_study(tmp_path / "optuna" / "train")


@pytest.mark.floors
def test_pruning_works_through_a_subprocess_launcher(tmp_path):
    """submitit's local launcher runs each job in its own process, as SLURM does: the job
    reaches its trial through the sqlite storage, from a relative path."""
    command = [SEARCH[0], str(REPO_ROOT / "train.py")] + SEARCH[2:]
    result = subprocess.run(
        command + ["hydra/launcher=submitit_local", "paths.log_dir=outputs_search"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs_search" / "optuna" / "train"
    assert list((sweep / ".submitit").iterdir())  # the jobs really ran in submitit processes
    _check_pruned_study(sweep)


# -- the report of a search --------------------------------------------------------------------
@pytest.mark.floors
def test_report_of_a_search_sorts_trials_and_keeps_pruned_apart(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="train", storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    space = {
        "optimizer.lr": D.FloatDistribution(0.01, 1, log=True),
        "data.batch_size": D.CategoricalDistribution([64, 128]),
    }
    results = [0.6, "pruned", 0.8, "fail", 0.7]
    for number, result in enumerate(results):
        trial = study.ask(space)
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        lines = [
            "hparams_search=optuna",
            "data=synthetic",
            f"optimizer.lr={trial.params['optimizer.lr']!r}",
            f"data.batch_size={trial.params['data.batch_size']}",
            f"+optuna_trial={number}",
        ]
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in lines))
        if result == "pruned":
            trial.report(0.99, step=1)  # higher than every complete trial: must not become "best"
            trial.set_user_attr(PRUNED_ATTR, 1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif result == "fail":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            (job / "metrics.json").write_text(
                json.dumps({"status": "completed", "epochs": 3, "test/acc": result - 0.05})
            )
            study.tell(trial, result)

    assert cli.main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows[1:]] == [
        ["2", "complete", "0.8"],
        ["4", "complete", "0.7"],
        ["0", "complete", "0.6"],
        ["1", "pruned", ""],
        ["3", "failed", ""],
    ]
    best_lr = study.trials[2].params["optimizer.lr"]
    best = f"python train.py data=synthetic optimizer.lr={best_lr!r} data.batch_size={study.trials[2].params['data.batch_size']}"
    assert f"best trial: {best}" in printed
    markdown = (tmp_path / "report.md").read_text()
    assert "3 complete, 1 pruned, 1 failed" in markdown and "(0.99 at prune)" in markdown
    assert "Parameter importances" in markdown
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- the base install: no Optuna ------------------------------------------------------------
BLOCK_OPTUNA = (
    "import runpy, sys; sys.modules['optuna'] = None; "  # `import optuna` now raises ImportError
    "sys.argv = ['train.py'] + sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')"
)


def test_training_works_without_optuna_and_the_search_says_what_to_install(tmp_path):
    run = [
        sys.executable,
        "-c",
        BLOCK_OPTUNA,
        *QUICK_RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"

    search = run[:-1] + ["hparams_search=optuna", f"paths.log_dir={tmp_path}"]
    result = subprocess.run(search, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hparams_search=optuna needs Optuna, which is not installed: "
        "pip install -e \".[search]\" (or pip install 'optuna>=5')"
    )
