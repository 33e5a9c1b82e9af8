"""Lightning's profiler, made free when no profiler is asked for (``trainer.profiler=null``).

Lightning wraps every hook call in ``trainer.profiler.profile(name)``, ~40 a training step
with speed94's callbacks. Its default PassThroughProfiler still builds a generator-based
context manager for each (6 Python calls); this one hands back one shared null context.
Asking for a real one (``trainer.profiler=simple``) replaces it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler

_NULL = nullcontext()


class NoProfiler(PassThroughProfiler):
    """PassThroughProfiler without the per-hook context-manager objects."""

    def profile(self, action_name: str) -> Any:  # type: ignore[override]
        return _NULL
