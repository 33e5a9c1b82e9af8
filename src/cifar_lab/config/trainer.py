"""The trainer.* rules (and the two top-level keys about the hardware): length, precision,
devices and nodes, what Lightning options we refuse; and the global batch they make."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from cifar_lab.config.run import validate_resume
from cifar_lab.config.values import ABSENT, get, is_int, plain, require

PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
)
TEST_CKPT = ("best", "last")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def global_batch(per_device: int, devices: Any = 1, num_nodes: Any = 1) -> int:
    """The batch one optimizer step sees across all processes (per-device x devices x nodes).

    ``devices`` may be a count, a list of device ids, or "auto"/-1 (every visible GPU, else 1).
    """
    count = device_count(devices)
    if count is None:
        import torch

        count = max(torch.cuda.device_count(), 1)
    return int(per_device) * count * node_count(num_nodes)


def device_count(devices: Any) -> int | None:
    """The processes per node ``trainer.devices`` asks for; None: "auto"/-1 (every visible GPU, else 1).

    A value that counts no device is one ConfigError here, before anything divides by it."""
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        count = len(devices)
    elif devices in ("auto", -1) and not isinstance(devices, bool):
        return None
    else:
        count = devices if is_int(devices) else 0
    require(
        count > 0,
        f"trainer.devices={plain(devices)!r} must be a positive number of devices, a list of device ids (e.g. [0,1]), or auto",
    )
    return count


def node_count(num_nodes: Any) -> int:
    """``trainer.num_nodes`` (null: 1), refused in one line unless it is a positive integer."""
    if num_nodes is None:
        return 1
    require(is_int(num_nodes) and num_nodes > 0, f"trainer.num_nodes={num_nodes!r} must be a positive integer")
    return num_nodes


def validate_trainer(cfg: DictConfig) -> None:
    max_epochs = get(cfg, "trainer.max_epochs", None)
    max_steps = get(cfg, "trainer.max_steps", None)
    if not (is_int(max_steps) and max_steps > 0):
        require(
            is_int(max_epochs) and max_epochs > 0,
            f"trainer.max_epochs={max_epochs!r} must be a positive integer (or set trainer.max_steps)",
        )
    for key, allowed, hint in (
        ("trainer.precision", PRECISIONS, ""),
        ("float32_matmul_precision", MATMUL_PRECISIONS, " (torch.set_float32_matmul_precision)"),
    ):
        value = get(cfg, key, ABSENT)
        if value is not ABSENT:
            value = str(value) if key == "trainer.precision" else value  # Lightning takes precision=32 too
            require(value in allowed, f"{key}={value!r} is not one of: {', '.join(allowed)}{hint}")
    test_ckpt = get(cfg, "test_ckpt", None)
    require(test_ckpt in (None, *TEST_CKPT), f"test_ckpt={test_ckpt!r} must be 'best' or 'last'")
    devices, nodes = get(cfg, "trainer.devices", ABSENT), get(cfg, "trainer.num_nodes", None)
    if devices is not ABSENT:
        device_count(devices)
    node_count(nodes)
    accumulate = get(cfg, "trainer.accumulate_grad_batches", ABSENT)  # absent: Lightning's 1
    require(  # refused rather than miscounted: every step count here is a batch count
        accumulate is ABSENT or (accumulate == 1 and not isinstance(accumulate, bool)),
        f"trainer.accumulate_grad_batches={plain(accumulate)!r} is not supported (schedules, fractional epochs, "
        f"decoupled lr and images/s count batches as steps): raise data.batch_size or trainer.devices instead",
    )
    threads = get(cfg, "cpu_threads", None)
    require(
        threads is None or (is_int(threads) and threads > 0),
        f"cpu_threads={threads!r} must be a positive integer, or null for one per usable core",
    )
    validate_resume(cfg)
