"""Resuming: where a run's newest checkpoint is, step checkpoints, and pre-emption (SIGTERM/SIGINT).

A run resumes in its own output folder: ``python train.py ... hydra.run.dir=<run folder>
resume=latest`` picks the newest of ``checkpoints/resume.ckpt`` (step and pre-emption saves)
and ``checkpoints/last*.ckpt`` (epoch ends), and continues bit for bit where it stopped.

No torch or Lightning here: train.py checks ``resume`` and handles signals before the heavy
imports (the Lightning callback that writes ``resume.ckpt`` is cifar_lab.runtime.resume_checkpoint).
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cifar_lab.runtime.run_folder import RESUME_FILE, RunFolder

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_EXTRA_SIGNALS: list[int] = []  # also_preempt_on's, for the runs started inside it


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


class PreemptedExit(SystemExit):
    """The exit of a pre-empted run (status 128 + signal number): a SystemExit that says which
    signal, so a launcher around the run (the requeueing SLURM one) can tell it from other exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextmanager
def also_preempt_on(*signums: int) -> Iterator[None]:
    """Runs started inside also stop cleanly on ``signums``, as on SIGTERM: the requeueing SLURM
    launcher's way to have SLURM's time-limit warning (USR2) save a checkpoint first."""
    added = [s for s in signums if s not in _SIGNALS and s not in _EXTRA_SIGNALS]
    _EXTRA_SIGNALS.extend(added)
    try:
        yield
    finally:
        for signum in added:
            _EXTRA_SIGNALS.remove(signum)


class Preemption:
    """SIGTERM/SIGINT handler (and ``also_preempt_on``'s signals): remembers the signal; training
    stops at the next safe point.

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
        for signum in (*_SIGNALS, *_EXTRA_SIGNALS):
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


def without_resume(overrides: list[str]) -> list[str]:
    """``overrides`` less those that say where a run starts from (its folder, resume, ckpt_path):
    what a resumed run keeps, before it adds ``resume=latest``."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir=", "resume=", "ckpt_path="))]


def resume_command(run_dir: str | Path, overrides: list[str]) -> str:
    """The command line that resumes this run in ``run_dir``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "train.py"
    if "submitit" in Path(argv0).parts:  # a sweep job run by submitit (python -m submitit.core._submit)
        argv0 = "train.py"
    program = f"python {argv0}" if argv0.endswith(".py") else Path(argv0).name
    keep = without_resume(overrides)
    run = Path(run_dir)
    try:
        run = run.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    parts = [*keep, f"hydra.run.dir={run}", "resume=latest"]
    return " ".join([program, *(shlex.quote(p) for p in parts)])


def checkpoint_dirs(cfg) -> list[Path]:
    """Where this run's checkpoints go: checkpoints/ of the run folder (and ModelCheckpoint's)."""
    from omegaconf import OmegaConf

    dirs = [RunFolder.of(cfg).checkpoints]
    configured = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    if configured and Path(str(configured)) not in dirs:
        dirs.append(Path(str(configured)))
    return dirs


def resume_path(cfg) -> Path | None:
    """The checkpoint to continue from: ckpt_path, or with resume=latest the run folder's newest
    (config.validate_config checked both settings)."""
    from cifar_lab.runtime.logs import display_path

    if cfg.get("ckpt_path"):
        return Path(str(cfg.ckpt_path))
    if cfg.get("resume") != "latest":
        return None
    found = [p for p in (find_latest(d) for d in checkpoint_dirs(cfg)) if p is not None]
    if not found:
        log.warning(
            "resume=latest: no checkpoint in %s yet, starting from scratch", display_path(checkpoint_dirs(cfg)[0])
        )
        return None
    latest = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("resume=latest: continuing from %s", display_path(latest))
    return latest
