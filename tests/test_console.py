"""The console's first screen is ours: the run plan, and none of Lightning's advertisements or device lines."""

from __future__ import annotations

import subprocess
import sys

from cifar_lab.runtime.hardware import cpu_precision
from tests.conftest import QUICK_RUN, REPO_ROOT


def test_python_train_py_opens_with_the_run_plan_and_no_lightning_noise(tmp_path):
    run = tmp_path / "run"
    # limit_val_batches=1.0: Lightning's "was configured so 100% of the batches will be used" line
    overrides = [o for o in QUICK_RUN if o != "logger=none"] + [
        "logger=csv",
        "optimizer.lr=0.03",
        "+trainer.limit_val_batches=1.0",
    ]
    result = subprocess.run(
        [sys.executable, "train.py", *overrides, f"hydra.run.dir={run}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    noise_lines = ("litlogger", "litmodels", "Tip:", "GPU available", "TPU available", "Loading `train_dataloader`")
    # "`weights_only` was not set": Lightning's line for each save that does not say (ours all do)
    for noise in (*noise_lines, "was configured so", "`weights_only` was not set"):
        assert noise not in console, noise
    log = (run / "train.log").read_text()
    first = console.strip().splitlines()[0]
    assert first.endswith("[cifar_lab.training.plan][INFO] - run plan:"), first
    plan = console[console.index("run plan:") :].splitlines()[1:8]
    assert [line.split()[0] for line in plan] == ["model", "data", "length", "precision", "optimizer", "run", "loggers"]
    expected = [
        "model       SeedCNN (model=seed_cnn): 8.48M parameters",
        "data        data=synthetic: 900 train / 100 val / 200 test images, 10 classes, 32x32, batch 64",
        "length      1 epoch x 2 steps per device = 2 steps",
        f"precision   {cpu_precision()} on 1 cpu device",  # trainer=cpu: bf16 where the CPU has it
        "optimizer   optimizer=sgd (lr 0.03, momentum 0.9, weight_decay 0.0005), scheduler=warmup_linear",
        f"run folder  {run}",
        "loggers     CSVLogger (csv/)",
    ]
    assert [line.strip() for line in plan] == expected
    assert all(line.strip() in log for line in plan)  # the log file has the plan too
    assert console.count("run plan:") == 1
