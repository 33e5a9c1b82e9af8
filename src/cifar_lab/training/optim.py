"""Optimizer parameter groups and per-step learning-rate schedules.

Schedules are factories ``f(optimizer, total_steps, ...) -> LRScheduler`` so Hydra can hold
them as partials and the LightningModule supplies ``total_steps`` once the trainer knows it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cifar_lab.config.optimization import check_milestones, check_schedule, validate_optimizer_options
from cifar_lab.errors import ConfigError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
# timm's norm layers that subclass none of torch's (model=timm; BatchNormAct2d, LayerNorm2d and
# GroupNormAct do): looked up only when timm is already loaded, so training never imports it
_TIMM_NORM_NAMES = ("RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32", "SimpleNorm", "SimpleNorm2d")


def _norm_types() -> tuple[type, ...]:
    layers = sys.modules.get("timm.layers")
    extra = tuple(getattr(layers, name) for name in _TIMM_NORM_NAMES if hasattr(layers, name)) if layers else ()
    return _NORM_TYPES + extra


def _param_kinds(model: nn.Module) -> dict[int, tuple[bool, bool]]:
    """id(param) -> (is a norm-layer parameter, takes no weight decay by kind: a bias, or one the
    net names in ``no_weight_decay()``, timm's convention for a ViT's position embedding and class token)."""
    norm_types = _norm_types()
    declared = getattr(model, "no_weight_decay", None)
    named = set(declared()) if callable(declared) else set()
    undecayed = {id(p) for name, p in model.named_parameters() if name in named}
    kinds: dict[int, tuple[bool, bool]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            kinds[id(param)] = (isinstance(module, norm_types), name == "bias" or id(param) in undecayed)
    return kinds


def param_groups(
    model: nn.Module, exclude_norm_and_bias_from_decay: bool, norm_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters split into optimizer groups.

    * ``exclude_norm_and_bias_from_decay``: norm parameters and biases get no weight decay;
      decaying them only shrinks a scale the next norm layer undoes. So do the parameters a net
      lists in ``no_weight_decay()`` (timm's ViTs: ``pos_embed``, ``cls_token``); timm's other
      1-d parameters (ConvNeXt's layer-scale ``gamma``) are decayed, as the option's name says.
    * ``norm_lr_scale``: norm-layer parameters train ``norm_lr_scale`` times faster (airbench's
      bias_scaler, 64) with weight decay divided by it, so their decay per step is unchanged.
      The group carries ``lr_scale``; ``apply_lr_scales`` turns it into lr and decay.
    """
    kinds = _param_kinds(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        is_norm, undecayed_kind = kinds[id(param)]
        no_decay = exclude_norm_and_bias_from_decay and (is_norm or undecayed_kind)
        scaled = is_norm and norm_lr_scale != 1.0
        groups.setdefault((no_decay, scaled), []).append(param)
    result = []
    for (no_decay, scaled), params in groups.items():
        group: dict[str, Any] = {"params": params}
        if no_decay:
            group["weight_decay"] = 0.0
        if scaled:
            group["lr_scale"] = norm_lr_scale
        result.append(group)
    return result


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Turn each group's ``lr_scale`` into its lr (and keep its decay per step unchanged)."""
    for group in optimizer.param_groups:
        scale = group.pop("lr_scale", 1.0)
        if scale != 1.0:
            group["lr"] *= scale
            group["weight_decay"] = group.get("weight_decay", 0.0) / scale


def decoupled_sgd(
    params: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    nesterov: bool = True,
) -> torch.optim.SGD:
    """Nesterov SGD from airbench's decoupled hyperparameters, for a mean-reduced loss.

    ``lr`` is the step size per 1024 examples with the momentum's gain (1 + 1/(1-momentum))
    divided out, and ``weight_decay`` is the decay per 1024 examples, independent of lr: so
    batch size, momentum, lr and decay can each be tuned without re-tuning the others.
    """
    torch_lr, torch_decay = decoupled_to_torch(lr, momentum, weight_decay, batch_size)
    return torch.optim.SGD(params, lr=torch_lr, momentum=momentum, nesterov=nesterov, weight_decay=torch_decay)


def decoupled_to_torch(lr: float, momentum: float, weight_decay: float, batch_size: int) -> tuple[float, float]:
    """airbench's decoupled (lr, weight_decay) per 1024 examples -> torch SGD's (lr, weight_decay)."""
    validate_optimizer_options(dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
    if batch_size <= 0:  # the global batch, derived from data.batch_size and the devices
        raise ConfigError(f"decoupled SGD needs a batch size > 0, got {batch_size}")
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    torch_lr = lr * batch_size / kilostep_scale
    decay_per_step = weight_decay * batch_size / kilostep_scale
    return torch_lr, decay_per_step / torch_lr


def _warmup_then(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float,
    initial_factor: float,
    final_factor: float,
    decay: Callable[[float], float],
) -> LambdaLR:
    """Linear ramp from ``initial_factor`` to the base lr over the warm-up steps, then the lr
    factor ``decay(t)`` for t from 0 to 1 over the remaining steps (from 1 to ``final_factor``)."""
    if total_steps <= 0:
        raise ConfigError(f"the schedule needs a positive number of steps, got {total_steps}")
    check_schedule(dict(warmup_fraction=warmup_fraction, initial_factor=initial_factor, final_factor=final_factor))
    warmup_steps = round(warmup_fraction * total_steps)
    span = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return initial_factor + (1.0 - initial_factor) * step / warmup_steps
        return decay(min((step - warmup_steps) / span, 1.0))

    return LambdaLR(optimizer, factor)


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.2,
    initial_factor: float = 0.1,
    final_factor: float = 0.0,
) -> LambdaLR:
    """Linear ramp to the base lr, then a straight line down (the speedruns' triangle)."""
    decay = lambda t: 1.0 + (final_factor - 1.0) * t  # noqa: E731
    return _warmup_then(optimizer, total_steps, warmup_fraction, initial_factor, final_factor, decay)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    initial_factor: float = 0.1,
    final_factor: float = 0.0,
) -> LambdaLR:
    """Linear ramp to the base lr, then a half cosine down to ``final_factor``."""
    decay = lambda t: final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))  # noqa: E731
    return _warmup_then(optimizer, total_steps, warmup_fraction, initial_factor, final_factor, decay)


def warmup_step(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    milestones: Sequence[float] = (0.3, 0.6, 0.8),
    gamma: float = 0.2,
    warmup_fraction: float = 0.0,
    initial_factor: float = 0.1,
) -> LambdaLR:
    """The papers' step schedule (x ``gamma`` at each milestone, a fraction of all steps: the
    Cutout and WRN papers' epochs 60/120/160 of 200 are 0.3/0.6/0.8), after an optional warm-up."""
    check_milestones(milestones, gamma, warmup_fraction)
    bounds = [round(m * total_steps) for m in milestones]
    warmup_steps = round(warmup_fraction * total_steps)
    span = max(total_steps - warmup_steps, 1)

    def decay(t: float) -> float:
        step = warmup_steps + t * span
        return gamma ** sum(step >= bound for bound in bounds)

    return _warmup_then(optimizer, total_steps, warmup_fraction, initial_factor, gamma ** len(bounds), decay)
