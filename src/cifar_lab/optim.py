"""Optimizer parameter groups and per-step learning-rate schedules.

Schedules are factories ``f(optimizer, total_steps, ...) -> LRScheduler`` so Hydra can hold
them as partials and the LightningModule supplies ``total_steps`` once the trainer knows it.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cifar_lab.errors import ConfigError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def split_decay_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed): norm-layer parameters and all biases are not decayed.

    Decaying them only shrinks the scale that the next norm layer undoes, which costs
    accuracy and makes the effective learning rate drift.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name == "bias":
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if id(param) in no_decay_ids else decay).append(param)
    return decay, no_decay


def param_groups(model: nn.Module, exclude_norm_and_bias_from_decay: bool) -> list[dict] | Iterable:
    """Parameter groups for the optimizer partial."""
    if not exclude_norm_and_bias_from_decay:
        return [p for p in model.parameters() if p.requires_grad]
    decay, no_decay = split_decay_params(model)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _check(total_steps: int, warmup_fraction: float, initial_factor: float, final_factor: float) -> None:
    if total_steps <= 0:
        raise ConfigError(f"the schedule needs a positive number of steps, got {total_steps}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"scheduler.warmup_fraction={warmup_fraction} must be in [0, 1)")
    for name, value in (("initial_factor", initial_factor), ("final_factor", final_factor)):
        if value < 0:
            raise ConfigError(f"scheduler.{name}={value} must be >= 0")


def _warmup_then(decay, total_steps: int, warmup_fraction: float, initial_factor: float):
    warmup_steps = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return initial_factor + (1.0 - initial_factor) * step / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return decay(min((step - warmup_steps) / span, 1.0))

    return factor


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.2,
    initial_factor: float = 0.1,
    final_factor: float = 0.0,
) -> LambdaLR:
    """Linear ramp to the base lr, then a straight line down (the speedruns' triangle)."""
    _check(total_steps, warmup_fraction, initial_factor, final_factor)
    decay = lambda t: 1.0 + (final_factor - 1.0) * t  # noqa: E731
    return LambdaLR(optimizer, _warmup_then(decay, total_steps, warmup_fraction, initial_factor))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    initial_factor: float = 0.1,
    final_factor: float = 0.0,
) -> LambdaLR:
    """Linear ramp to the base lr, then a half cosine down to ``final_factor``."""
    _check(total_steps, warmup_fraction, initial_factor, final_factor)
    decay = lambda t: final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))  # noqa: E731
    return LambdaLR(optimizer, _warmup_then(decay, total_steps, warmup_fraction, initial_factor))
