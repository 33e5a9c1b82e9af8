"""tune=lr_find's rules (conf/tune/lr_find.yaml): the sweep's range and length, and what a
one-device sweep from a fresh init cannot honour."""

from __future__ import annotations

from omegaconf import DictConfig

from cifar_lab.config.trainer import device_count, node_count
from cifar_lab.config.values import ABSENT, get, is_int, is_number, plain, require

LR_FIND_MODES = ("exponential", "linear")
# Lightning's suggestion skips the sweep's first 10 steps and its last one
LR_FIND_MIN_STEPS = 20


def lr_find_range(cfg: DictConfig) -> tuple[float, float]:
    """tune.min_lr and tune.max_lr in optimizer.lr's units (null: optimizer.lr / 1000 and x 100)."""
    lr = get(cfg, "optimizer.lr")
    low, high = get(cfg, "tune.min_lr", None), get(cfg, "tune.max_lr", None)
    low = lr / 1000 if low is None else low
    high = lr * 100 if high is None else high
    for key, value in (("tune.min_lr", low), ("tune.max_lr", high)):
        require(is_number(value) and value > 0, f"{key}={plain(value)!r} must be a positive number")
    require(low < high, f"tune.min_lr={low:g} must be below tune.max_lr={high:g}")
    return float(low), float(high)


def validate_lr_find(cfg: DictConfig) -> None:
    """tune=lr_find's settings, and what a one-device sweep from a fresh init cannot honour."""
    lr_find_range(cfg)
    steps = get(cfg, "tune.num_training")
    require(
        is_int(steps) and steps >= LR_FIND_MIN_STEPS,
        f"tune.num_training={plain(steps)!r} must be a whole number >= {LR_FIND_MIN_STEPS} "
        f"(Lightning's suggestion skips the first 10 steps)",
    )
    mode = get(cfg, "tune.mode")
    require(mode in LR_FIND_MODES, f"tune.mode={plain(mode)!r} is not one of: {', '.join(LR_FIND_MODES)}")
    threshold = get(cfg, "tune.early_stop_threshold", None)
    require(
        threshold is None or (is_number(threshold) and threshold > 1),
        f"tune.early_stop_threshold={plain(threshold)!r} must be a number > 1 (a multiple of the best loss) or null",
    )
    typed_devices = get(cfg, "trainer.devices", ABSENT)  # absent: Lightning's auto, one device here or many
    devices = None if typed_devices is ABSENT else device_count(typed_devices)
    nodes = node_count(get(cfg, "trainer.num_nodes", None))
    require(
        devices in (1, None) and nodes == 1,
        f"tune=lr_find runs on one device, not trainer.devices={plain(typed_devices)!r} x "
        f"trainer.num_nodes={nodes}: add trainer.devices=1 trainer.num_nodes=1 (plain sgd/adamw: with "
        f"data.batch_size = the global batch; sgd_decoupled's lr is per 1024 examples and carries over)",
    )
    dev_run = get(cfg, "trainer.fast_dev_run", False)
    require(
        not dev_run,
        f"trainer.fast_dev_run={plain(dev_run)!r} (debug=default) makes Lightning skip the lr sweep: drop it",
    )
    for key in ("resume", "ckpt_path"):
        value = get(cfg, key, None)
        require(value is None, f"{key}={plain(value)!r}: tune=lr_find sweeps from a fresh init, not from a checkpoint")
    require(
        get(cfg, "optuna_trial", None) is None,
        "tune=lr_find trains nothing for a search to score: drop hparams_search (or tune=lr_find)",
    )
