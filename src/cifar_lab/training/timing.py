"""Timing that means what airbench means: device work finished, not merely queued."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

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
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None

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
