"""Pre-emption: SIGTERM/SIGINT (and the requeueing launcher's USR2) stop a run at its next safe
point, after a checkpoint, and the process exits with a status that names the signal.

No torch or Lightning here: train.py installs the handler before the heavy imports (the
Lightning callback that saves and stops is :mod:`cifar_lab.runtime.checkpoints.callback`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_EXTRA_SIGNALS: list[int] = []  # also_preempt_on's, for the runs started inside it


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
