"""Muon for the conv filters, decoupled Nesterov SGD for everything else (airbench94_muon).

Muon replaces a filter's momentum update by its nearest semi-orthogonal matrix (a few
Newton-Schulz iterations on the ``out x (in*k*k)`` matrix), so every direction in the update
moves at the same rate instead of the few largest ones dominating. airbench94_muon reaches
94% in 8 epochs where airbench94 needs 9.9 (it also moves to batch 2000 and another head
scale). Each filter tensor is renormalised to
norm ``sqrt(out_channels)`` before its step: the BatchNorm after it makes the scale
irrelevant, and a fixed scale makes ``muon_lr`` a fixed angle per step.

Which parameters: trainable 4-D tensors (conv filters). Biases, norm parameters and the
linear head keep decoupled SGD (``cifar_lab.training.optim.decoupled_sgd``'s units and defaults), so
``norm_lr_scale`` and the schedule apply to them as before. The schedule's factor scales
``muon_lr`` too. Works with any model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from cifar_lab.config.optimization import validate_optimizer_options
from cifar_lab.errors import ConfigError
from cifar_lab.training.optim import decoupled_to_torch

# quintic Newton-Schulz coefficients tuned for speed over exact convergence (Keller Jordan):
# the singular values land in about [0.5, 1.5] after 3 steps, which trains as well as exactly 1
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately ``U V^T`` of ``matrix = U S V^T``, in bfloat16 (cheap on GPUs and bf16 CPUs)."""
    a, b, c = _NS_COEFFICIENTS
    x = matrix.bfloat16()
    x = x / (x.norm() + eps)  # every singular value <= 1, inside the iteration's basin
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class MuonWithSGD(torch.optim.Optimizer):
    """One optimizer, two update rules: groups with ``muon=True`` step with Muon, others with
    Nesterov SGD (torch.optim.SGD's rule: weight decay added to the gradient, no dampening).

    One optimizer rather than two keeps Lightning's single-optimizer loop, one LR scheduler
    and one checkpoint entry.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 3,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=False, ns_steps=ns_steps
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ConfigError("Muon needs matrices or conv filters: 1-D parameters (biases, norms) must use SGD")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    (self._muon_step if group["muon"] else self._sgd_step)(p, group)
        return loss

    def _momentum(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """The (Nesterov) momentum direction; the buffer starts at the first gradient, as in torch."""
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = grad.clone()
        else:
            buf.mul_(group["momentum"]).add_(grad)
        return grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf

    def _sgd_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        p.add_(self._momentum(p, grad, group), alpha=-group["lr"])

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        update = self._momentum(p, p.grad, group)
        p.mul_(math.sqrt(p.size(0)) / p.norm().clamp_min(1e-12))
        direction = orthogonalize(update.reshape(len(update), -1), group["ns_steps"]).view_as(p)
        p.add_(direction.to(p.dtype), alpha=-group["lr"])


def decoupled_muon(
    params: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    muon_lr: float,
    muon_momentum: float,
    nesterov: bool = True,
    ns_steps: int = 3,
) -> MuonWithSGD:
    """Muon for the conv filters (``muon_lr``: the step per optimizer step, an angle, so it does
    not scale with the loss), decoupled SGD for the rest (``lr``/``weight_decay`` as in
    ``decoupled_sgd``: per 1024 examples). Filters get no weight decay: Muon fixes their norm.
    """
    validate_optimizer_options(dict(muon_lr=muon_lr, muon_momentum=muon_momentum, ns_steps=ns_steps))
    sgd_lr, sgd_decay = decoupled_to_torch(lr, momentum, weight_decay, batch_size)
    groups: list[dict[str, Any]] = []
    for group in _as_groups(params):
        filters = [p for p in group["params"] if p.ndim == 4]
        others = [p for p in group["params"] if p.ndim != 4]
        if others:
            groups.append({**group, "params": others})
        if filters:
            groups.append(
                {"params": filters, "muon": True, "lr": muon_lr, "momentum": muon_momentum, "weight_decay": 0.0}
            )
    return MuonWithSGD(
        groups, lr=sgd_lr, momentum=momentum, nesterov=nesterov, weight_decay=sgd_decay, ns_steps=ns_steps
    )


def _as_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    params = list(params)
    if params and not isinstance(params[0], dict):
        return [{"params": params}]
    return [dict(group) for group in params]
