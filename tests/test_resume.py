"""Resume: a run killed at any moment (SIGKILL, SIGTERM, SIGINT) continues to the same result.

The main test kills real `python train.py` processes at several points of a small,
deterministic CPU run, resumes each time with `resume=latest` in the same folder, and compares
the final weights and metrics.json with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_lab.data.loader import DeviceLoader
from cifar_lab.runtime.checkpoints.latest import find_latest
from cifar_lab.runtime.checkpoints.preemption import Preempted
from cifar_lab.tasks.train import train
from tests.conftest import REPO_ROOT

# 310 training images / 50 = 6 steps per epoch, 3 epochs: 18 steps, a checkpoint after each
# (slack after the last kill point, so a slow poll never finds the run already finished)
RUN = [
    "data=synthetic",
    "data.source.train_per_class=36",
    "data.val_size=50",
    "data.batch_size=50",
    "model=fast",
    "model.widths=[8,16,16]",
    "module.whiten_bias_epochs=1",
    # the first conv group stops training after epoch 0: resumes inside that phase must re-freeze
    "+callbacks.freeze._target_=cifar_lab.recipes.freezing.FreezeLayers",
    "+callbacks.freeze.modules=[layers.0]",
    "+callbacks.freeze.from_epoch=1",
    "trainer=cpu",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "checkpoint_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
]
TOTAL_STEPS = 18
# what may differ between an interrupted and an uninterrupted run: clocks, and the flag itself
# clocks (every *_time_s: train, fit, test, val, checkpoint, warmup) and what follows from them
UNTIMED = {"train_images_per_s", "resumed"}


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _newest(run_dir: Path) -> tuple[int, str]:
    """(global step, file name) of the checkpoint resume=latest would take now."""
    latest = find_latest(run_dir / "checkpoints")
    if latest is None:
        return -1, ""
    try:
        return int(torch.load(latest, map_location="cpu", weights_only=True)["global_step"]), latest.name
    except Exception:  # replaced between listing and reading: look again
        return -1, ""


def _interrupt_after(proc: subprocess.Popen, run_dir: Path, step: int, signum: int, timeout: float = 120) -> tuple:
    """Send ``signum`` once ``proc`` has written a checkpoint at ``step`` or later: (signal, its
    step, its file). Written by ``proc``, not left by the process before it: a killed process may
    write a step or two between the check that found its step and the kill, and a signal sent
    while the new one is still importing would find no handler installed yet."""
    deadline = time.monotonic() + timeout
    step = max(step, _newest(run_dir)[0] + 1)  # read before proc, still starting up, can write
    while (newest := _newest(run_dir))[0] < step:
        assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} after {timeout} s"
        time.sleep(0.05)
    proc.send_signal(signum)
    return (signal.Signals(signum).name, *newest)


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _untimed_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in UNTIMED and not k.endswith("_time_s")}


def test_killed_runs_resume_to_the_same_weights_and_metrics(tmp_path):
    """SIGKILL mid-epoch and at the epoch boundary, SIGTERM (clean pre-emption), SIGKILL again,
    each followed by resume=latest: the same final weights and metrics as a run never stopped."""
    reference_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = _start(reference_dir)  # runs beside the interrupted chain (2 cores)

    kills = []
    # 1: SIGKILL early in epoch 0 (a step checkpoint, resume.ckpt)
    proc = _start(run_dir)
    kills.append(_interrupt_after(proc, run_dir, 2, signal.SIGKILL))
    assert proc.wait(60) == -signal.SIGKILL

    # 2: SIGKILL at the epoch boundary (the epoch-end last.ckpt, or the step just after it)
    proc = _start(run_dir, "resume=latest")
    kills.append(_interrupt_after(proc, run_dir, 6, signal.SIGKILL))
    assert proc.wait(60) == -signal.SIGKILL

    # 3: SIGTERM, a clean pre-emption: checkpoint, one line with the command, status 143
    proc = _start(run_dir, "resume=latest")
    kills.append(_interrupt_after(proc, run_dir, min(kills[-1][1] + 2, TOTAL_STEPS - 6), signal.SIGTERM))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if "pre-empted" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "resume with: python train.py" in lines[0] and "resume=latest" in lines[0]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "preempted"
    resume_args = shlex.split(lines[0].split("resume with: ", 1)[1])[2:]  # drop "python train.py"

    # 4: SIGKILL of the run started with exactly the printed command
    proc = subprocess.Popen(
        [sys.executable, "train.py", *resume_args],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kills.append(_interrupt_after(proc, run_dir, min(kills[-1][1] + 1, TOTAL_STEPS - 3), signal.SIGKILL))
    assert proc.wait(60) == -signal.SIGKILL

    final = _start(run_dir, "resume=latest")
    _, stderr = final.communicate(timeout=180)
    assert final.returncode == 0, stderr[-3000:]
    _, stderr = reference.communicate(timeout=180)
    assert reference.returncode == 0, stderr[-3000:]

    print("kill points (signal, newest checkpoint step, file):", kills)
    assert all(0 < step < TOTAL_STEPS for _, step, _ in kills)
    ours, theirs = _final_state(run_dir), _final_state(reference_dir)
    assert ours.keys() == theirs.keys()
    unequal = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not unequal, f"weights differ after resuming: {unequal[:5]}"
    assert _untimed_metrics(run_dir) == _untimed_metrics(reference_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["resumed"] is True

    # one TensorBoard run, continued: several event files in one folder, no version_N forks
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert len({e.parent for e in events}) == 1 and len(events) >= 4
    # no torn or temporary checkpoint files left behind
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_sigint_saves_a_checkpoint_of_the_running_step_then_resume_finishes(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) mid-epoch: the running step completes and is saved, Preempted, then resume."""
    import cifar_lab.training.module as module_mod
    from tests.conftest import compose_config

    original = module_mod.ImageClassifier.training_step

    def ctrl_c_in_step_4(self, *args):
        if self.trainer.global_step == 3:  # the fourth step is running
            signal.raise_signal(signal.SIGINT)  # the handler runs now, in this (main) thread
        return original(self, *args)

    monkeypatch.setattr(module_mod.ImageClassifier, "training_step", ctrl_c_in_step_4)
    overrides = [*RUN, "logger=csv", "trainer.max_epochs=1", "checkpoint_every_n_steps=null", "callbacks.freeze=null"]
    with pytest.raises(Preempted) as stop:
        train(compose_config(overrides, tmp_path))
    assert stop.value.signum == signal.SIGINT and "resume=latest" in stop.value.message
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    saved = torch.load(tmp_path / "checkpoints" / "resume.ckpt", weights_only=True)
    assert saved["global_step"] == 4  # the step that was running when Ctrl-C came, completed
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "preempted"

    monkeypatch.setattr(module_mod.ImageClassifier, "training_step", original)
    resumed = train(compose_config([*overrides, "resume=latest"], tmp_path))
    assert resumed["status"] == "completed" and resumed["resumed"] and resumed["steps"] == 6


def test_resume_latest_without_a_checkpoint_starts_fresh(make_cfg, tmp_path):
    summary = train(make_cfg("model=seed_cnn", "debug=default", "resume=latest"))
    assert summary["status"] == "completed" and summary["resumed"] is False


def test_find_latest_takes_the_newest_complete_checkpoint(tmp_path):
    assert find_latest(tmp_path / "none") is None
    (tmp_path / "last.ckpt").write_bytes(b"a")
    (tmp_path / "resume.ckpt").write_bytes(b"b")
    (tmp_path / ".resume.ckpt.x1y2.tmp").write_bytes(b"torn")  # a write cut short: never chosen
    os.utime(tmp_path / "last.ckpt", ns=(1, 1_000_000_000))
    assert find_latest(tmp_path).name == "resume.ckpt"
    os.utime(tmp_path / "resume.ckpt", ns=(1, 1))
    assert find_latest(tmp_path).name == "last.ckpt"


def test_loader_state_skips_the_batches_already_trained():
    images, labels = torch.randn(40, 3, 4, 4), torch.arange(40)
    make = lambda: DeviceLoader(images, labels, 8, shuffle=True, seed=3, epoch_fn=lambda: 2)  # noqa: E731
    full = [y.tolist() for _, y in make()]
    first = make()
    it = iter(first)
    done = [next(it)[1].tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"seed": 3, "epoch": 2, "batches": 2, "batch_size": 8, "world_size": 1}
    resumed = make()
    resumed.load_state_dict(state)
    rest = [y.tolist() for _, y in resumed]
    assert done + rest == full
    assert [y.tolist() for _, y in resumed] == full  # the skip applies to one iteration only


@pytest.mark.floors
def test_a_run_with_ema_and_batch_mixing_resumes_exactly(tmp_path, monkeypatch):
    """The EMA's average (Lightning's EMAWeightAveraging state in the checkpoint) and MixUp/CutMix's
    draws (the global RNG, which the checkpoint carries) continue as if never interrupted."""
    import cifar_lab.training.module as module_mod
    from tests.conftest import compose_config

    overrides = [
        *RUN,
        "logger=none",
        "trainer.max_epochs=2",
        "checkpoint_every_n_steps=null",
        "callbacks.freeze=null",
        "module.ema_decay=0.8",
        "module.mixup_alpha=1.0",
        "module.cutmix_alpha=1.0",
    ]
    reference = train(compose_config(overrides, tmp_path / "uninterrupted"))
    original = module_mod.ImageClassifier.training_step

    def ctrl_c_in_step_9(self, *args):
        if self.trainer.global_step == 8:  # epoch 1, mid-way: the average has seen 8 updates
            signal.raise_signal(signal.SIGINT)
        return original(self, *args)

    run_dir = tmp_path / "interrupted"
    monkeypatch.setattr(module_mod.ImageClassifier, "training_step", ctrl_c_in_step_9)
    with pytest.raises(Preempted):
        train(compose_config(overrides, run_dir))
    monkeypatch.setattr(module_mod.ImageClassifier, "training_step", original)
    resumed = train(compose_config([*overrides, "resume=latest"], run_dir))
    assert resumed["resumed"] and resumed["steps"] == reference["steps"] == 12

    ours = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    theirs = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):  # the average, and the weights it averages
        unequal = [k for k in theirs[key] if not torch.equal(ours[key][k], theirs[key][k])]
        assert not unequal, f"{key} differs after resuming: {unequal[:5]}"
    assert _untimed_metrics(run_dir) == _untimed_metrics(tmp_path / "uninterrupted")
