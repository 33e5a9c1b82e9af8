"""tune=lr_find (Lightning's Tuner.lr_find on the training config) and callbacks.early_stopping
(Lightning's EarlyStopping): real runs on a few synthetic images."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from cifar_lab.config.check import validate_config
from cifar_lab.errors import ConfigError
from cifar_lab.reports.jobs import ReportError, find_jobs
from cifar_lab.tasks.lr_find import find, initialise_like_training, lr_find, sweep_config
from cifar_lab.tasks.train import train
from cifar_lab.training.build import build_run
from tests.conftest import REPO_ROOT, TINY_RUN

# one torch thread: two threads of this tiny net on 2 busy cores ran each run ~8x slower (OpenMP
# threads waiting for a core), and nothing here measures speed
TINY = [*TINY_RUN, "cpu_threads=1"]
# the sweep: the tiny net, as few steps as Lightning's suggestion allows with some to spare
SWEEP = [*TINY, "tune=lr_find", "tune.num_training=24"]
# early stopping: the tiny net, no logger or test-end figures (nothing here reads them)
STOPPING = [*TINY, "logger=none", "callbacks.test_predictions=null", "callbacks/early_stopping=default"]


# -- lr finder ------------------------------------------------------------------------------
def test_lr_find_prints_a_suggestion_writes_the_curve_and_leaves_no_training_run(make_cfg, tmp_path, capsys):
    results = lr_find(make_cfg(*SWEEP))

    lines = capsys.readouterr().out.splitlines()
    suggested = [line for line in lines if line.startswith("suggested lr: optimizer.lr=")]
    command = [line for line in lines if line.startswith("train with: python train.py ")]
    assert len(suggested) == 1 and len(command) == 1, lines
    lr = float(suggested[0].split("optimizer.lr=")[1].split()[0])
    assert lr == pytest.approx(results["suggested_lr"], rel=1e-2)
    # the same command line without the sweep, plus the lr to train with
    assert command[0].endswith(f"optimizer.lr={lr:.3g}") and "tune" not in command[0]
    assert "model.widths=[8,16,16]" in command[0]

    saved = json.loads((tmp_path / "lr_find.json").read_text())
    lrs, losses = saved["lr"], saved["loss"]
    assert saved["steps"] == len(lrs) == len(losses) == 24
    assert lrs[0] == pytest.approx(saved["min_lr"]) and all(a < b for a, b in zip(lrs, lrs[1:]))
    # a sane range: past the 10 steps Lightning skips, inside the sweep (sgd: optimizer.lr 0.1 / 1000 .. x 100)
    assert saved["min_lr"] == pytest.approx(1e-4) and saved["max_lr"] == pytest.approx(10.0)
    assert lrs[10] <= saved["suggested_lr"] <= lrs[-2]
    # the debiased curve starts at the untrained net's loss (ln 10 for 10 classes), not half of it
    assert losses[0] == pytest.approx(math.log(10), abs=0.25)
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing that looks like a training run: no checkpoints/, metrics.json, logs, nor Lightning's temp checkpoint
    assert {p.name for p in tmp_path.iterdir()} - {"cache"} == {"lr_find.json", "lr_find.png"}
    # nor a failed one: `cifar-lab report` passes the sweep's folder by (Hydra gives it a .hydra/)
    (tmp_path / ".hydra").mkdir()
    with pytest.raises(ReportError, match="no jobs found"):
        find_jobs(tmp_path)


def test_a_sweep_that_diverges_at_once_is_one_error_and_keeps_its_curve(make_cfg, tmp_path):
    # from lr 1e4 the loss passes 4x its best within a few steps: Lightning stops the sweep
    # before the 10 steps its suggestion skips, so there is no suggestion to give
    with pytest.raises(ConfigError, match="the lr sweep gave no suggestion"):
        lr_find(make_cfg(*SWEEP, "tune.min_lr=1e4", "tune.max_lr=1e6"))
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] is None and saved["steps"] < 12 and (tmp_path / "lr_find.png").is_file()


def test_lr_find_leaves_weights_loop_and_rng_as_they_were(make_cfg, tmp_path):
    # decoupled units (the sweep's lrs are converted), EMA (it swaps weights in checkpoints) and
    # the whitening init training starts from
    cfg = make_cfg(*SWEEP, "optimizer=sgd_decoupled", "module.ema_decay=0.9")
    run = build_run(sweep_config(cfg), preemption=None, ckpt_path=None, checkpoint=None)
    initialise_like_training(cfg, run)
    before = {k: v.clone() for k, v in run.module.state_dict().items()}
    rng = torch.get_rng_state()

    results = find(run, cfg)

    after = run.module.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed
    assert run.trainer.global_step == 0 and run.trainer.current_epoch == 0
    assert torch.equal(torch.get_rng_state(), rng)
    # sgd_decoupled: torch lr = optimizer.lr x batch / (1024 (1 + 1/(1 - momentum)))
    assert results["torch_lr_per_optimizer_lr"] == pytest.approx(30 / (1024 * (1 + 1 / 0.15)))
    assert results["lr"][0] == pytest.approx(cfg.optimizer.lr / 1000)
    assert not list(tmp_path.glob(".lr_find_*")) and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [("module.norm_lr_scale=64", "module.norm_lr_scale=64"), ("optimizer=muon", "optimizer=muon")],
)
def test_lr_find_refuses_parameter_groups_at_different_lrs(make_cfg, override, named):
    with pytest.raises(ConfigError, match=f"sweeps one lr for every parameter group, but {named}"):
        lr_find(make_cfg(*SWEEP, override))


def test_lr_find_bad_use_is_one_error_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "data=synthetic",
            "tune=lr_find",
            "trainer.devices=2",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: tune=lr_find runs on one device, not trainer.devices=2")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "lr_find.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.num_training=5", "tune.num_training=5 must be a whole number >= 20"),
        ("tune.min_lr=1", "tune.min_lr=1 must be below tune.max_lr=0.5"),
        ("tune.mode=log", "tune.mode='log' is not one of: exponential, linear"),
        ("tune.early_stop_threshold=0.5", "tune.early_stop_threshold=0.5 must be a number > 1"),
        ("resume=latest", "resume='latest': tune=lr_find sweeps from a fresh init"),
        ("debug=default", "trainer.fast_dev_run=True (debug=default) makes Lightning skip the lr sweep"),
    ],
)
def test_lr_find_settings_that_cannot_work_are_refused(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(make_cfg(*SWEEP, "tune.max_lr=0.5", override))


# -- early stopping ---------------------------------------------------------------------------
def test_early_stopping_at_an_accuracy_ends_a_fractional_run_as_completed(tmp_path):
    from tests.conftest import FAST_OVERRIDES, compose_config

    # epochs=5.5 (33 steps of 6 a epoch); the tiny net passes val/acc 0.4 at its third epoch
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("trainer.max_epochs")]
    cfg = compose_config(
        [*overrides, *STOPPING, "epochs=5.5", "callbacks.early_stopping.stopping_threshold=0.4"], tmp_path
    )
    summary = train(cfg)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["stopped_early"] is True
    assert metrics["stop_reason"] == "stopping_threshold"
    assert metrics["stopped_epoch"] == metrics["epochs"] < 5 and metrics["steps"] == 6 * metrics["epochs"]
    assert metrics["val/acc"] > 0.4 and "test/acc" in metrics  # the target reached, then tested
    assert summary["stopped_epoch"] == metrics["stopped_epoch"]


def test_patience_stop_and_its_wait_count_survive_a_resume(make_cfg, tmp_path):
    # min_delta 1.0: no epoch after the first counts as an improvement; patience 3
    flat = [*STOPPING, "callbacks.early_stopping.patience=3", "callbacks.early_stopping.min_delta=1.0"]
    first = train(make_cfg(*flat, "trainer.max_epochs=2"))
    assert first["stopped_early"] is False and first["epochs"] == 2  # a stop at the last epoch is no early stop
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("EarlyStopping")]
    assert state["wait_count"] == 1

    # resumed to 5 epochs: epochs 3 and 4 bring the count to 3 and stop the run after epoch 4
    # (a count started afresh would reach only 2 by epoch 5, the end)
    resumed = train(make_cfg(*flat, "trainer.max_epochs=5", "resume=latest"))
    assert resumed["resumed"] and resumed["status"] == "completed"
    assert resumed["stopped_early"] is True and resumed["stop_reason"] == "patience_exhausted"
    assert resumed["stopped_epoch"] == resumed["epochs"] == 4


def test_early_stopping_is_off_by_default_and_on_under_any_callbacks(make_cfg):
    assert make_cfg().callbacks.get("early_stopping") is None
    lean = make_cfg("callbacks=none", "callbacks/early_stopping=default", fast=False)
    assert lean.callbacks.early_stopping._target_ == "lightning.pytorch.callbacks.EarlyStopping"
    assert lean.callbacks.early_stopping.monitor == "val/acc"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.val_size=0"], "callbacks.early_stopping.monitor=val/acc needs validation, but data.val_size=0"),
        (["callbacks.early_stopping.stopping_threshold=94"], "stopping_threshold=94 can never be crossed"),
        (["callbacks.early_stopping.mode=min"], "mode='min' would stop on the wrong side of val/acc: use mode=max"),
        (["callbacks.early_stopping.monitor=val/accuracy"], "monitor='val/accuracy' is not one of the metrics"),
        (["callbacks.early_stopping.patience=0"], "patience=0 must be a whole number of validation epochs"),
    ],
)
def test_early_stopping_settings_that_cannot_work_are_refused(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(make_cfg("callbacks/early_stopping=default", *overrides))
