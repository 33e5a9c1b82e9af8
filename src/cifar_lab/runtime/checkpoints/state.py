"""What a checkpoint carries so that a resumed run continues exactly: the running states of the
module's epoch metrics and the global RNG states, as weights-only checkpoint data so a resumed
run draws the same numbers (the loader's position is ResumeCheckpoint's, checkpoints.callback)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


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


# ---- global RNGs ------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from (dropout, ...), in weights-only types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() recorded (the parts this machine has)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        np_state = state["numpy"]
        keys = np_state["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
