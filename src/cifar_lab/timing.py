"""Timing that means what airbench means: device work finished, not merely queued."""

from __future__ import annotations

import time

import torch


class DeviceClock:
    """Wall time of a region of device work: synchronizes the GPU before reading the clock."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None
