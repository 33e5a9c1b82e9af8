"""Timing that means what airbench means: device work finished, not merely queued."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch


class DeviceClock:
    """Wall time of a region of device work: synchronizes the GPU before reading the clock.

    Work that is not training (per-epoch validation, checkpoint writes) can be taken out of a
    running clock: :meth:`pause` / :meth:`resume` around a hook pair, :meth:`excluding` around
    a block. Their seconds are kept by label in :attr:`excluded`. A block excluded inside a
    pause counts under its own label only (a checkpoint written during validation is
    checkpoint time, not validation time).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.excluded: dict[str, float] = defaultdict(float)
        self._started: float | None = None
        self._paused: tuple[str, float] | None = None  # (label, since)

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def running(self) -> bool:
        return self._started is not None

    def elapsed(self) -> float:
        """Seconds so far, the running part included (synchronizes like start/stop)."""
        return self.seconds + (self._now() - self._started if self._started is not None else 0.0)

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        """Stop the clock; a pause in progress ends, its time counted under its label."""
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None
        elif self._paused is not None:
            label, since = self._paused
            self._paused = None
            self.excluded[label] += self._now() - since

    def pause(self, label: str) -> None:
        """Stop a running clock until :meth:`resume`; the gap counts as ``label`` (no-op when stopped)."""
        if self.running:
            self.stop()
            self._paused = (label, self._now())

    def resume(self) -> None:
        if self._paused is not None:
            label, since = self._paused
            self._paused = None
            self.excluded[label] += self._now() - since
            self.start()

    @contextmanager
    def excluding(self, label: str) -> Iterator[None]:
        """Run the block outside the clock, its seconds counted as ``label`` while the clock is
        running or paused; blocks outside both (e.g. after training) are not counted."""
        if not (self.running or self._paused):
            yield
            return
        was_running = self.running
        self.stop()
        since = self._now()
        try:
            yield
        finally:
            took = self._now() - since
            self.excluded[label] += took
            if was_running:
                self.start()
            elif self._paused is not None:  # inside a pause: not that pause's time too
                outer, outer_since = self._paused
                self._paused = (outer, outer_since + took)


class TrainingTimer(pl.Callback):
    """The run's training clock (:attr:`clock`) as airbench counts it: from the first training
    step, the data already on the device, to the last, with the per-epoch validation passes
    taken out (and checkpoint writes, by the checkpoint IO). Every training run has one
    (``training.build.build_callbacks``); the whitening init runs on it, the device warm-up and
    checkpoint writes are kept out of it, metrics.json and the epoch log read it.
    """

    def __init__(self) -> None:
        self.clock = DeviceClock()
        self.steps_at_start = 0  # the global step training (re)started from: > 0 after a resume

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.start()
        self.steps_at_start = trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.pause("validation")  # no-op outside fit (a stopped clock)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.resume()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # paused, not stopped: ModelCheckpoint writes last.ckpt in its on_train_end, which runs
        # after this one (Lightning calls checkpoint callbacks last), and a write in a pause
        # still counts as checkpoint time
        self.clock.pause("finishing")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.stop()


def training_timer(callbacks: Iterable[Any]) -> TrainingTimer | None:
    """The TrainingTimer among ``callbacks`` (e.g. ``trainer.callbacks``), or None."""
    return next((c for c in callbacks if isinstance(c, TrainingTimer)), None)
