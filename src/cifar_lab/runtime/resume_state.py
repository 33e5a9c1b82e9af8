"""What a checkpoint carries so that a resumed run continues exactly: the running states of the
module's epoch metrics and the global RNGs (the loader's position is ResumeCheckpoint's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cifar_lab.runtime.rng import rng_state, set_rng_state


def resume_state(module: Any, metric_names: Sequence[str]) -> dict[str, Any]:
    """checkpoint["cifar_lab_resume"]: the named metrics' running states and the global RNGs."""
    return {"metrics": {name: _metric_state(getattr(module, name)) for name in metric_names}, "rng": rng_state()}


def restore_resume_state(module: Any, state: dict[str, Any] | None, metric_names: Sequence[str]) -> None:
    """Put back what :func:`resume_state` saved (nothing to do for a checkpoint without it)."""
    if not state:
        return
    for name, metric_state in state.get("metrics", {}).items():
        if name in metric_names:
            _load_metric_state(getattr(module, name), metric_state)
    set_rng_state(state.get("rng", {}))


def _metric_state(metric: Any) -> dict[str, Any]:
    """A torchmetrics metric's running state (tensors only; list states are not resumable)."""
    states = {name: getattr(metric, name) for name in metric._defaults}
    return {
        "states": {k: v.detach().clone() for k, v in states.items() if isinstance(v, torch.Tensor)},
        "update_count": int(metric._update_count),
    }


def _load_metric_state(metric: Any, state: dict[str, Any]) -> None:
    for name, value in state.get("states", {}).items():
        if name in metric._defaults:
            current = getattr(metric, name)
            setattr(metric, name, value.to(device=current.device, dtype=current.dtype))
    metric._update_count = int(state.get("update_count", 0))
    metric._computed = None
