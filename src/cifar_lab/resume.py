"""Resuming: where a run's newest checkpoint is, step checkpoints, and pre-emption (SIGTERM/SIGINT).

A run resumes in its own output folder: ``python train.py ... hydra.run.dir=<run folder>
resume=latest`` picks the newest of ``checkpoints/resume.ckpt`` (step and pre-emption saves)
and ``checkpoints/last*.ckpt`` (epoch ends), and continues bit for bit where it stopped.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)

RESUME_FILE = "resume.ckpt"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def find_latest(checkpoint_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint in ``checkpoint_dir`` (None when there is none).

    Only complete files count: checkpoints are written to hidden temp files and renamed.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = [p for p in [folder / RESUME_FILE, *folder.glob("last*.ckpt")] if p.is_file()]
    if not candidates:
        return None
    # ties (same mtime): prefer the epoch-end last.ckpt, saved after the step checkpoint
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name != RESUME_FILE))


class Preempted(Exception):
    """Raised to stop training after a SIGTERM/SIGINT, once a checkpoint is safely written."""

    def __init__(self, signum: int, saved: bool = True) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved = saved


class Preemption:
    """SIGTERM/SIGINT handler: remembers the signal; training stops at the next safe point.

    ``phase``: "setup" (data loading: nothing to save, the signal stops at once), "training"
    (ResumeCheckpoint saves and stops after the current step) or "finishing" (the test pass of
    a finished training: it completes, the run ends normally). A second signal stops at once,
    keeping only the checkpoints already written.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = "setup"
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = signum if first else self.signum
        name = signal.Signals(signum).name
        if not first or self.phase == "setup":
            raise Preempted(signum, saved=False)
        if self.phase == "training":
            log.warning("received %s: saving a checkpoint after this training step, then stopping", name)
        else:
            log.warning("received %s after training finished: completing the test pass first", name)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class ResumeCheckpoint(Checkpoint):
    """Writes ``checkpoints/resume.ckpt`` every ``every_n_steps`` training steps (None: never) and
    when pre-empted, then stops training by raising :class:`Preempted`.

    A ``Checkpoint`` subclass, so Lightning runs it after every other callback's batch-end hook
    (e.g. Lookahead's weight averaging): the saved state is the state the next step starts from.

    It also restores the training loader's position (``DeviceLoader.load_state_dict``) from the
    loop state Lightning saved: Lightning itself only does so when the loader is built after
    the checkpoint is read, which a per-step lr schedule (``estimated_stepping_batches``) defeats.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None, preemption: Preemption | None = None) -> None:
        self.path = Path(dirpath) / RESUME_FILE
        self.every_n_steps = every_n_steps
        self.preemption = preemption
        self._saved_step = -1
        self._loader_states: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # temp files of writes cut short by a kill (never read: only renamed files count)
        if trainer.is_global_zero and self.path.parent.is_dir():
            for stale in self.path.parent.glob(".*.ckpt.*.tmp"):
                stale.unlink(missing_ok=True)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._loader_states = list((fit_loop.get("state_dict") or {}).get("combined_loader") or [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self._loader_states = self._loader_states, []
        combined = trainer.fit_loop._combined_loader
        if not states or combined is None:
            return
        loaders = [dl for dl in combined.flattened if hasattr(dl, "load_state_dict") and hasattr(dl, "state_dict")]
        for loader, state in zip(loaders, states):
            loader.load_state_dict(state)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._saved_step or not self.path.is_file():
            trainer.save_checkpoint(self.path)
            self._saved_step = trainer.global_step

    def _stop_if_preempted(self, trainer: pl.Trainer) -> None:
        if self.preemption is not None and self.preemption.requested:
            self._save(trainer)
            raise Preempted(self.preemption.signum)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch's end (validation, epoch hooks) is still to come: ModelCheckpoint's
            # last.ckpt, or the hooks below when pre-empted, save after it
            return
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save(trainer)
        self._stop_if_preempted(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._stop_if_preempted(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_preempted(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {}

    @property
    def state_key(self) -> str:
        return "cifar_lab.ResumeCheckpoint"


def resume_command(run_dir: str | Path, overrides: list[str]) -> str:
    """The command line that resumes this run in ``run_dir``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "train.py"
    program = f"python {argv0}" if argv0.endswith(".py") else Path(argv0).name
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir=", "resume=", "ckpt_path="))]
    run = Path(run_dir)
    try:
        run = run.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    parts = [*keep, f"hydra.run.dir={run}", "resume=latest"]
    return " ".join([program, *(shlex.quote(p) for p in parts)])
