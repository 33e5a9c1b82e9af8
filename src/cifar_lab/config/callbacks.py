"""The callbacks.* rules that Lightning would only meet mid-run: freezing (shared with
cifar_lab.recipes.freezing) and early stopping (Lightning's EarlyStopping)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from cifar_lab.config.run import training_epochs
from cifar_lab.config.values import get, is_int, is_number, plain, require
from cifar_lab.errors import ConfigError

# what callbacks.early_stopping may watch (logged once per epoch by training.module), and the
# mode each needs; accuracies and AUROC are fractions
EARLY_STOPPING_MONITORS = {
    "val/acc": "max",
    "val/acc_best": "max",
    "val/auroc": "max",
    "val/loss": "min",
    "train/acc": "max",
    "train/loss": "min",
}


def check_freeze(modules: Any, from_epoch: Any) -> None:
    """callbacks.freeze's values (shared with cifar_lab.recipes.freezing, which works without Hydra)."""
    names = plain(modules)
    require(
        isinstance(names, list) and len(names) > 0 and all(isinstance(m, str) and m for m in names),
        f"callbacks.freeze.modules={names!r} must be a list of submodule names of the net, e.g. [whiten, layers.0]",
    )
    require(
        is_int(from_epoch) and from_epoch >= 0,
        f"callbacks.freeze.from_epoch={from_epoch!r} must be a whole number >= 0",
    )


def check_freeze_fits(from_epoch: int, epochs: float | None) -> None:
    """A freeze must start before the run ends (``epochs`` may be fractional; None: unknown)."""
    if epochs is not None:
        require(
            from_epoch < math.ceil(epochs),
            f"callbacks.freeze.from_epoch={from_epoch} is not before the end of the {epochs} training epochs, "
            "so nothing would freeze: lower it, or set callbacks.freeze=null",
        )


def validate_callbacks(cfg: DictConfig) -> None:
    _validate_freeze(cfg)
    _validate_early_stopping(cfg)


def _validate_freeze(cfg: DictConfig) -> None:
    freeze = get(cfg, "callbacks.freeze", None)
    if not freeze:
        return
    check_freeze(freeze.get("modules"), freeze.get("from_epoch"))
    check_freeze_fits(freeze.get("from_epoch"), training_epochs(cfg))


def _validate_early_stopping(cfg: DictConfig) -> None:
    """callbacks.early_stopping (Lightning's EarlyStopping): a monitor the run logs, the mode it
    needs, reachable thresholds; refused where the monitor would never be logged (val/* with
    data.val_size=0), rather than failing after the first epoch's training."""
    early = get(cfg, "callbacks.early_stopping", None)
    if not early:
        return
    key = "callbacks.early_stopping"
    monitor = early.get("monitor")
    require(
        monitor in EARLY_STOPPING_MONITORS,
        f"{key}.monitor={plain(monitor)!r} is not one of the metrics a run logs: {', '.join(EARLY_STOPPING_MONITORS)}",
    )
    wanted = EARLY_STOPPING_MONITORS[monitor]
    mode = early.get("mode", "min")  # Lightning's EarlyStopping default
    require(mode == wanted, f"{key}.mode={plain(mode)!r} would stop on the wrong side of {monitor}: use mode={wanted}")
    if str(monitor).startswith("val/") and get(cfg, "data.val_size", None) == 0:
        raise ConfigError(
            f"{key}.monitor={monitor} needs validation, but data.val_size=0 turns it off: set data.val_size=N (> 0), "
            f"monitor=train/loss, or leave early stopping off (callbacks/early_stopping=null)"
        )
    for name in ("stopping_threshold", "divergence_threshold"):
        value = early.get(name)
        if value is None:
            continue
        require(is_number(value), f"{key}.{name}={plain(value)!r} must be a number or null")
        if not monitor.endswith("loss"):
            require(
                0 <= value <= 1,
                f"{key}.{name}={value} can never be crossed: {monitor} is a fraction (0.94 means 94%)",
            )
    if "patience" in early:
        patience = early.patience
        require(
            is_int(patience) and patience >= 1,
            f"{key}.patience={plain(patience)!r} must be a whole number of validation epochs >= 1",
        )
