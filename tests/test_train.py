"""End-to-end training runs on synthetic data: every model, outputs, multirun, hand-checked metrics."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from cifar_lab.tasks.train import train
from tests.conftest import REPO_ROOT, SHARED_ARCHIVE

MODELS = ["seed_cnn", "fast", "resnet18", "vgg16", "wide"]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_runs_fast_dev_run_on_cpu(make_cfg, tmp_path, model):
    cfg = make_cfg(f"model={model}", "debug=default", "model.width=2" if model == "wide" else "seed=0")
    summary = train(cfg)
    # a crash test (one batch each): that every stage ran and scored; whether each net learns is
    # tests/test_large_models.py's job (test_each_recipe_learns_through_train_at_a_tiny_width)
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert "test/acc" in summary and math.isfinite(summary["test/loss"])
    assert summary["params"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["params"] == summary["params"]


@pytest.mark.floors
def test_short_run_learns_and_writes_every_output(make_cfg, tmp_path):
    cfg = make_cfg("model=seed_cnn", "trainer.max_epochs=3", "optimizer.lr=0.05")
    summary = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test/acc", "test/auroc", "val/acc_best", "train_time_s", "epochs", "params", "seed"):
        assert key in metrics, key
    assert metrics["epochs"] == 3 and metrics["seed"] == 0
    assert metrics["test/acc"] > 0.5  # 10 classes: chance is 0.1
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "checkpoints").glob("epoch*.ckpt"))) == 1  # the best one
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    scalars = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0})
    scalars.Reload()
    val_acc = scalars.Scalars("val/acc")
    # one point per epoch (at its last batch), and the hparams tab's final value at the run's
    # last step, with the test metrics: not at step 0, where it would open every curve
    epoch_ends = [metrics["steps"] // 3 * (i + 1) - 1 for i in range(3)]
    assert sorted({e.step for e in val_acc}) == [*epoch_ends, metrics["steps"]]
    assert val_acc[-1].value == pytest.approx(metrics["val/acc"])
    assert metrics["val/acc_best"] == pytest.approx(max(e.value for e in val_acc))
    assert summary["test/acc"] == metrics["test/acc"]


def test_debug_overfit_trains_on_the_same_few_batches_every_epoch(make_cfg, monkeypatch):
    from cifar_lab.training.module import ImageClassifier

    seen: dict[int, list[torch.Tensor]] = {}
    labels: set[int] = set()
    original = ImageClassifier.training_step

    def recording(self, batch, batch_idx):
        seen.setdefault(self.current_epoch, []).append(batch[0].sum((1, 2, 3)))
        labels.update(batch[1].tolist())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ImageClassifier, "training_step", recording)
    train(make_cfg("debug=overfit", "model=seed_cnn", "data.batch_size=16", "trainer.max_epochs=3"))
    assert sorted(seen) == [0, 1, 2] and all(len(batches) == 3 for batches in seen.values())
    for epoch in (1, 2):  # overfit_batches=3: the same 3 batches, in the same order
        assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[epoch])), epoch
    assert len(labels) >= 5  # shuffled once: not the first 48 images of a class-sorted split


def test_checkpoint_carries_classes_and_normalization(make_cfg, tmp_path):
    train(make_cfg("model=seed_cnn", "data.val_size=0"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    extra = ckpt["cifar_lab"]
    assert extra["classes"] == [f"class_{i}" for i in range(10)]
    assert len(extra["mean"]) == len(extra["std"]) == 3
    assert extra["model_config"]["_target_"] == "cifar_lab.models.SeedCNN"


def test_without_validation_tests_final_weights(make_cfg, tmp_path):
    summary = train(make_cfg("model=seed_cnn", "data.val_size=0"))
    assert "val/acc" not in summary and "test/acc" in summary
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_last_ckpt_holds_the_last_step_after_a_last_epoch_with_no_new_best(make_cfg, tmp_path):
    """With the lr at ~0 the second epoch's val/acc equals the first's: no new best, so Lightning
    2.6 alone would leave last.ckpt at epoch 0 (it rewrites it only beside a top-k save)."""
    summary = train(make_cfg("model=seed_cnn", "trainer.max_epochs=2", "optimizer.lr=1e-12", "scheduler=none"))
    best = torch.load(tmp_path / "checkpoints" / "epoch000.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] < last["global_step"] == summary["steps"]


def test_csv_logger_and_cosine_adamw(make_cfg, tmp_path):
    summary = train(make_cfg("model=seed_cnn", "logger=csv", "optimizer=adamw", "scheduler=cosine"))
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert summary["test/acc"] > 0.2


@pytest.mark.floors
def test_metrics_match_a_hand_computation():
    """accuracy and macro one-vs-rest AUROC of fixed logits, against sums done by hand."""
    from cifar_lab.training.module import ImageClassifier

    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [3.0, 0.5, 0.0], [0.0, 2.0, 2.5]])
    labels = torch.tensor([0, 1, 1, 2, 2])

    class Fixed(nn.Module):
        def forward(self, x):
            return logits[x[:, 0, 0, 0].long()]

    module = ImageClassifier(Fixed(), optimizer=torch.optim.SGD, num_classes=3)
    module.log = lambda *a, **k: None
    index_images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    module.test_step((index_images, labels), 0)

    # argmax: 0, 1, 2, 0, 2 -> correct for samples 0, 1, 4
    assert module.test_acc.compute().item() == pytest.approx(3 / 5)
    probs = logits.softmax(-1)

    def auroc_one_vs_rest(cls: int) -> float:
        pos = [p[cls].item() for p, y in zip(probs, labels) if y == cls]
        neg = [p[cls].item() for p, y in zip(probs, labels) if y != cls]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
        return wins / (len(pos) * len(neg))

    expected = sum(auroc_one_vs_rest(c) for c in range(3)) / 3
    assert module.test_auroc.compute().item() == pytest.approx(expected, abs=1e-6)
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    assert module.test_loss.compute().item() == pytest.approx(expected_loss, rel=1e-6)


def test_no_network_torchvision_path_fails_with_one_line(make_cfg, monkeypatch):
    import urllib.error

    import torchvision

    from cifar_lab.errors import DataError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    cfg = make_cfg("data=cifar10", "data.val_size=10")
    with pytest.raises(DataError) as err:
        train(cfg)
    assert "data=folder data.path=PATH" in str(err.value) and "\n" not in str(err.value)


def test_multirun_writes_one_result_per_job(small_multirun):
    """`python train.py -m`: one folder per job with its own results and config (the session's
    small sweep, 2 learning rates x 2 seeds: its own subprocess was ~10 CPU s of imports alone)."""
    jobs = sorted(p.parent.name for p in small_multirun.glob("*/metrics.json"))
    assert jobs == ["0", "1", "2", "3"]
    for job in jobs:
        seed = json.loads((small_multirun / job / "metrics.json").read_text())["seed"]
        assert f"- seed={seed}\n" in (small_multirun / job / ".hydra" / "overrides.yaml").read_text()
        assert (small_multirun / job / ".hydra" / "config.yaml").is_file()
    seeds = [json.loads((small_multirun / j / "metrics.json").read_text())["seed"] for j in jobs]
    assert sorted(seeds) == [0, 0, 1, 1]


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason=f"real data not found at {SHARED_ARCHIVE}")
def test_real_data_one_short_epoch_beats_chance_clearly(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=folder",
        f"data.path={SHARED_ARCHIVE}",
        "model=fast",
        "model.widths=[32,64,64]",  # a quarter of the width: this test checks the data path, not the net
        "data.val_size=0",
        "trainer.limit_train_batches=20",
        "logger=none",
        "optimizer.lr=0.5",
        "module.label_smoothing=0.2",
    )
    summary = train(cfg)
    assert summary["steps"] == 20
    assert summary["test/acc"] > 0.3, summary  # chance is 0.1 on the 10000 official test images


@pytest.mark.parametrize("val_size", [None, 0])
def test_train_time_leaves_out_validation_and_checkpoint_writes(make_cfg, monkeypatch, val_size):
    """train_time_s is init + training steps + the test pass in every configuration: slow
    per-epoch validation and slow checkpoint writes show up in their own fields instead.
    Without validation ModelCheckpoint writes last.ckpt at the end of training (its
    on_train_end): that write is checkpoint time too."""
    import time

    import cifar_lab.runtime.checkpoints.files as checkpoint_io
    from cifar_lab.training.module import ImageClassifier

    pause = 0.6
    validate, write = ImageClassifier.on_validation_epoch_start, checkpoint_io.atomic_write_bytes
    fit_validations, saves = [], []

    def slow_validation(self):
        if not self.trainer.sanity_checking:
            fit_validations.append(1)
            time.sleep(pause)
        validate(self)

    def slow_write(*args, **kwargs):
        saves.append(1)
        time.sleep(pause)
        write(*args, **kwargs)

    monkeypatch.setattr(ImageClassifier, "on_validation_epoch_start", slow_validation)
    monkeypatch.setattr(checkpoint_io, "atomic_write_bytes", slow_write)
    no_validation = [] if val_size is None else [f"data.val_size={val_size}"]
    cfg = make_cfg("model=seed_cnn", "trainer.max_epochs=2", "checkpoint_every_n_steps=5", *no_validation)
    started = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - started
    # step saves, and best and last per epoch (with validation) or last at the end (without)
    assert len(fit_validations) == (2 if val_size is None else 0) and len(saves) >= 4
    assert summary["val_time_s"] >= pause * len(fit_validations)
    # every save happened inside fit, several during validation (ModelCheckpoint): each counts once
    assert summary["checkpoint_time_s"] >= pause * len(saves)
    assert summary["train_time_s"] + summary["val_time_s"] + summary["checkpoint_time_s"] <= wall
    assert summary["train_time_s"] == pytest.approx(summary["fit_time_s"] + summary["test_time_s"], abs=2e-3)


def test_lean_recipe_prints_one_line_per_epoch_and_no_unactionable_warnings(tmp_path):
    """speed94 has no progress bar: each epoch prints one line (epoch, loss, accuracy, images/s,
    elapsed, time left), and nothing a user can neither act on nor understand."""
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "experiment=speed94",
            "data=synthetic",
            "trainer=cpu",
            "data.batch_size=50",
            "model.widths=[8,16,16]",
            "epochs=2.5",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    lines = [line for line in console.splitlines() if "cifar_lab.training.callbacks" in line and " epoch " in line]
    assert [line.split(" epoch ")[1].split()[0] for line in lines] == ["1/2.5", "2/2.5", "3/2.5"]
    assert all("train/loss" in line and "train/acc" in line and "img/s" in line and "elapsed" in line for line in lines)
    assert all("left ~" in line for line in lines[:-1]) and "left ~" not in lines[-1]
    assert "LeafSpec" not in console and "logging interval" not in console
    logged = (tmp_path / "train.log").read_text().splitlines()
    assert (
        sum("cifar_lab.training.callbacks" in line and " epoch " in line for line in logged) == 3
    )  # in the run's log too


def test_module_setattr_fast_path_stores_values_as_nn_module_would():
    """ImageClassifier.__setattr__ skips nn.Module's checks only for a plain value replacing a
    plain attribute; parameters, buffers, submodules and new names take nn.Module's path."""
    from cifar_lab.models import FastNet
    from cifar_lab.training.module import ImageClassifier

    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10)
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and "_current_fx_name" in module.__dict__
    module.scale = nn.Parameter(torch.ones(1))  # a new parameter is registered
    assert "scale" in dict(module.named_parameters()) and "scale" not in module.__dict__
    module.scale = None  # None onto a parameter's name: nn.Module keeps it registered as None
    assert "scale" in module._parameters and module._parameters["scale"] is None
    module.register_buffer("count", torch.zeros(()))
    module.count = torch.ones(())  # a buffer stays a buffer
    assert "count" in dict(module.named_buffers()) and float(module.count) == 1.0
    module.extra = nn.Linear(2, 2)  # a submodule is registered
    assert "extra" in dict(module.named_children())


def test_no_profiler_asked_for_means_no_per_hook_profiler_cost(make_cfg):
    """trainer.profiler=null gets the free NoProfiler; a profiler the user asks for is kept."""
    import lightning.pytorch as pl

    from cifar_lab.training.profiling import NoProfiler

    seen = []
    original = pl.Trainer.fit

    def recording(self, *args, **kwargs):
        seen.append(type(self.profiler).__name__)
        return original(self, *args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(pl.Trainer, "fit", recording):
        train(make_cfg("model=seed_cnn", "debug=default"))
        train(make_cfg("model=seed_cnn", "debug=default", "trainer.profiler=simple"))
    assert seen == [NoProfiler.__name__, "SimpleProfiler"]
    with NoProfiler().profile("x") as entered:  # a null context, reused
        assert entered is None
    assert NoProfiler().profile("a") is NoProfiler().profile("b")


def test_train_metrics_are_logged_once_per_epoch_with_every_step_in_them(make_cfg, monkeypatch):
    """train/loss and train/acc are logged at the epoch's last step only (each log call costs
    host time), and still average every step of the epoch, the last partial epoch included."""
    from cifar_lab.training.module import ImageClassifier

    logged, losses = [], []
    original_log, original_step = ImageClassifier.log, ImageClassifier.training_step

    def log(self, name, value, *args, **kwargs):
        if name.startswith("train/"):
            logged.append((name, self.trainer.global_step))
        return original_log(self, name, value, *args, **kwargs)

    def step(self, batch, batch_idx):
        loss = original_step(self, batch, batch_idx)
        losses.append((self.current_epoch, float(loss)))
        return loss

    monkeypatch.setattr(ImageClassifier, "log", log)
    monkeypatch.setattr(ImageClassifier, "training_step", step)
    summary = train(
        make_cfg(
            "data=synthetic",
            "trainer=cpu",
            "callbacks.rich_progress_bar=null",
            "model=seed_cnn",
            "data.val_size=0",
            "data.batch_size=100",
            "epochs=2.5",
            fast=False,
        )
    )
    assert summary["steps"] == 25  # 10 steps an epoch, 2.5 epochs
    assert [s for name, s in logged if name == "train/loss"] == [10, 20, 25]
    last_epoch = [loss for epoch, loss in losses if epoch == 2]
    assert summary["train/loss"] == pytest.approx(sum(last_epoch) / len(last_epoch), rel=1e-4)
