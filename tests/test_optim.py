"""Parameter groups, decoupled SGD and the per-step schedules."""

import math

import pytest
import torch
from torch import nn

from cifar_lab.errors import ConfigError
from cifar_lab.training.optim import (
    apply_lr_scales,
    decoupled_sgd,
    param_groups,
    warmup_cosine,
    warmup_linear_decay,
    warmup_step,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_norm_and_bias_params_are_excluded_from_decay():
    net = _net()
    optimizer = torch.optim.SGD(param_groups(net, exclude_norm_and_bias_from_decay=True), lr=0.1, weight_decay=0.5)
    assert _group_of(optimizer, net[0].weight)["weight_decay"] == 0.5
    assert _group_of(optimizer, net[3].weight)["weight_decay"] == 0.5
    for param in (net[1].weight, net[1].bias, net[3].bias):
        assert _group_of(optimizer, param)["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 5


def test_frozen_params_are_left_out():
    net = _net()
    net[1].weight.requires_grad_(False)
    groups = param_groups(net, exclude_norm_and_bias_from_decay=False)
    assert all(p is not net[1].weight for g in groups for p in g["params"])


def test_norm_lr_scale_keeps_decay_per_step():
    net = _net()
    optimizer = torch.optim.SGD(param_groups(net, False, norm_lr_scale=64.0), lr=0.1, weight_decay=0.5)
    apply_lr_scales(optimizer)
    norm_group = _group_of(optimizer, net[1].bias)
    other = _group_of(optimizer, net[0].weight)
    assert norm_group["lr"] == pytest.approx(6.4) and other["lr"] == pytest.approx(0.1)
    # lr * weight_decay is the decay applied per step: unchanged by the lr scale
    assert norm_group["lr"] * norm_group["weight_decay"] == pytest.approx(0.1 * 0.5)
    assert "lr_scale" not in norm_group


def test_decoupled_sgd_matches_airbench_sum_loss_update():
    """One step of decoupled_sgd on a mean loss equals airbench's SGD on a summed loss."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    base = nn.Linear(5, 3)
    ours, theirs = nn.Linear(5, 3), nn.Linear(5, 3)
    ours.load_state_dict(base.state_dict())
    theirs.load_state_dict(base.state_dict())
    lr, momentum, wd, batch = 11.5, 0.85, 0.0153, 16
    ks = 1024 * (1 + 1 / (1 - momentum))
    opt_ours = decoupled_sgd(ours.parameters(), lr=lr, momentum=momentum, weight_decay=wd, batch_size=batch)
    air_lr, air_wd = lr / ks, wd * batch / ks
    opt_theirs = torch.optim.SGD(
        theirs.parameters(), lr=air_lr, weight_decay=air_wd / air_lr, momentum=momentum, nesterov=True
    )
    for _ in range(3):
        for model, opt, reduction in ((ours, opt_ours, "mean"), (theirs, opt_theirs, "sum")):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y, reduction=reduction).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_decoupled_sgd_rejects_bad_momentum():
    with pytest.raises(ConfigError, match="momentum"):
        decoupled_sgd([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=1.0, weight_decay=0.0, batch_size=8)


def _factors(make, total: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer, total, **kwargs)
    out = []
    for _ in range(total + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_linear_decay_is_airbenchs_triangle():
    lrs = _factors(warmup_linear_decay, 100, warmup_fraction=0.23, initial_factor=0.2, final_factor=0.07)
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[23] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.07)
    assert lrs[50] == pytest.approx(1.0 + (0.07 - 1.0) * 27 / 77)


def test_warmup_cosine_ends_at_final_factor():
    lrs = _factors(warmup_cosine, 200, warmup_fraction=0.1, initial_factor=0.0, final_factor=0.01)
    assert lrs[0] == 0.0 and lrs[20] == pytest.approx(1.0)
    assert lrs[110] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[200] == pytest.approx(0.01)


def test_step_schedule_multiplies_by_gamma_at_each_milestone_after_the_warm_up():
    lrs = _factors(warmup_step, 200, milestones=[0.3, 0.6, 0.8], gamma=0.2)
    assert lrs[0] == 1.0 and lrs[59] == 1.0  # no warm-up: the papers' form
    assert lrs[60] == pytest.approx(0.2) and lrs[119] == pytest.approx(0.2)
    assert lrs[120] == pytest.approx(0.04) and lrs[160] == pytest.approx(0.008) and lrs[200] == pytest.approx(0.008)
    warm = _factors(warmup_step, 100, milestones=[0.5], gamma=0.1, warmup_fraction=0.2, initial_factor=0.2)
    assert warm[0] == pytest.approx(0.2) and warm[10] == pytest.approx(0.6) and warm[20] == 1.0
    assert warm[49] == 1.0 and warm[50] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(milestones=[0.6, 0.3]), "increasing fractions"),
        (dict(milestones=[1.2]), "increasing fractions"),
        (dict(milestones=[]), "increasing fractions"),
        (dict(gamma=0.0), "scheduler.gamma=0.0"),
        (dict(milestones=[0.1], warmup_fraction=0.2), "starts inside the warm-up"),
    ],
)
def test_step_schedule_rejects_bad_milestones_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        warmup_step(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(warmup_fraction=1.0), dict(warmup_fraction=-0.1), dict(final_factor=-1.0)])
def test_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        warmup_linear_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, **kwargs)
