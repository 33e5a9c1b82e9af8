"""Muon on the conv filters, decoupled SGD on the rest (cifar_lab.recipes.muon)."""

import math

import pytest
import torch
from torch import nn

from cifar_lab.config.check import validate_config
from cifar_lab.errors import ConfigError
from cifar_lab.recipes.muon import decoupled_muon, orthogonalize
from cifar_lab.tasks.train import train
from cifar_lab.training.optim import apply_lr_scales, decoupled_sgd, param_groups

SGD_ARGS = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, batch_size=256)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, bias=True),
        nn.Flatten(),
        nn.LazyLinear(3),
    )


def _built(net: nn.Module) -> nn.Module:
    net(torch.randn(2, 3, 8, 8))  # materialise the lazy head
    return net


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(net(x), y)


@pytest.mark.parametrize("shape", [(6, 40), (40, 6), (24, 24)])
def test_orthogonalize_puts_every_singular_value_near_one(shape):
    torch.manual_seed(0)
    # a badly conditioned matrix: SGD's update would be dominated by its largest directions
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    s = torch.logspace(0, -2, k)
    matrix = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    out = orthogonalize(matrix, steps=5)
    assert out.shape == matrix.shape
    singular = torch.linalg.svdvals(out.float())
    assert singular.min() > 0.5 and singular.max() < 1.5, singular  # from a 100x spread
    # the same singular vectors: close to U V^T, the polar factor of the input
    polar = u[:, :k] @ v[:, :k].T
    assert torch.nn.functional.cosine_similarity(out.float().flatten(), polar.flatten(), dim=0) > 0.95


def test_filters_go_to_muon_and_the_rest_to_decoupled_sgd():
    net = _built(_net())
    optimizer = decoupled_muon(
        param_groups(net, False, norm_lr_scale=64.0), muon_lr=0.05, muon_momentum=0.9, **SGD_ARGS
    )
    apply_lr_scales(optimizer)
    muon = [p for g in optimizer.param_groups if g["muon"] for p in g["params"]]
    assert {id(p) for p in muon} == {id(net[0].weight), id(net[3].weight)}
    for g in optimizer.param_groups:
        if g["muon"]:
            assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.05, 0.9, 0.0)
    reference = decoupled_sgd(param_groups(net, False, norm_lr_scale=64.0), **SGD_ARGS)
    apply_lr_scales(reference)
    for param in (net[1].weight, net[1].bias, net[3].bias, net[5].weight, net[5].bias):
        ours = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
        theirs = next(g for g in reference.param_groups if any(p is param for p in g["params"]))
        assert not ours["muon"]
        for key in ("lr", "momentum", "weight_decay", "nesterov"):
            assert ours[key] == pytest.approx(theirs[key]), (key, param.shape)


def test_non_filter_parameters_step_exactly_like_torch_sgd():
    ours, theirs = _built(_net()), _built(_net())
    theirs.load_state_dict(ours.state_dict())
    opt_ours = decoupled_muon(param_groups(ours, False, 64.0), muon_lr=0.05, muon_momentum=0.9, **SGD_ARGS)
    opt_theirs = decoupled_sgd(param_groups(theirs, False, 64.0), **SGD_ARGS)
    for opt in (opt_ours, opt_theirs):
        apply_lr_scales(opt)
    for net in (ours, theirs):  # only the non-filter parameters may differ after the steps
        for module in (net[0], net[3]):
            module.weight.requires_grad_(False)
    for step in range(4):
        for net, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            _loss(net, step).backward()
            opt.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(ours[5].weight, _built(_net())[5].weight)  # they did move


def test_a_muon_step_renormalises_the_filter_then_moves_it_by_the_orthogonalized_gradient():
    net = _built(_net())
    conv = net[0]
    with torch.no_grad():
        conv.weight.mul_(7.0)  # the scale Muon must undo
    optimizer = decoupled_muon(param_groups(net, False), muon_lr=0.1, muon_momentum=0.0, nesterov=False, **SGD_ARGS)
    before = conv.weight.detach().clone()
    _loss(net, 0).backward()
    grad = conv.weight.grad.clone()
    optimizer.step()
    expected = before * math.sqrt(8) / before.norm() - 0.1 * orthogonalize(grad.reshape(8, -1)).view_as(grad).float()
    torch.testing.assert_close(conv.weight.detach(), expected)
    assert conv.weight.norm().item() == pytest.approx(math.sqrt(8), rel=0.15)


def test_muon_trains_a_small_net_with_a_schedule_and_a_checkpoint_round_trip():
    net = _built(_net())
    optimizer = decoupled_muon(param_groups(net, False), muon_lr=0.05, muon_momentum=0.8, **SGD_ARGS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 40)
    first = _loss(net, 0).item()
    for _ in range(30):
        optimizer.zero_grad()
        _loss(net, 0).backward()
        optimizer.step()
        scheduler.step()
    assert _loss(net, 0).item() < 0.5 * first
    muon_group = next(g for g in optimizer.param_groups if g["muon"])
    assert muon_group["lr"] == pytest.approx(0.05 * (1 - 30 / 40))  # the schedule scales Muon too
    restored = decoupled_muon(param_groups(net, False), muon_lr=0.05, muon_momentum=0.8, **SGD_ARGS)
    restored.load_state_dict(optimizer.state_dict())
    assert [g["muon"] for g in restored.param_groups] == [g["muon"] for g in optimizer.param_groups]
    buffers = [s["momentum_buffer"] for s in restored.state.values()]
    assert len(buffers) == sum(len(g["params"]) for g in optimizer.param_groups)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"muon_lr": 0.0}, "optimizer.muon_lr=0.0 must be > 0"),
        ({"muon_momentum": 1.0}, "optimizer.muon_momentum=1.0 must be in [0, 1)"),
        ({"ns_steps": 0}, "optimizer.ns_steps=0 must be a whole number >= 1"),
        ({"momentum": 1.5}, "optimizer.momentum=1.5 must be in [0, 1)"),
    ],
)
def test_bad_muon_settings_are_one_clear_line(override, message):
    args = {**SGD_ARGS, "muon_lr": 0.05, "muon_momentum": 0.9, **override}
    with pytest.raises(ConfigError) as error:
        decoupled_muon(param_groups(_built(_net()), False), **args)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.muon_lr=-0.1", "optimizer.muon_lr=-0.1 must be > 0"),
        ("optimizer.muon_momentum=1", "optimizer.muon_momentum=1 must be in [0, 1)"),
    ],
)
def test_bad_muon_config_fails_before_any_work(make_cfg, override, message):
    cfg = make_cfg("data=cifar10", "optimizer=muon", override, fast=False)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_optimizer_muon_trains_fastnet_end_to_end(make_cfg, tmp_path):
    summary = train(
        make_cfg(
            "model=fast", "model.widths=[16,32,32]", "optimizer=muon", "optimizer.muon_lr=0.1", "trainer.max_epochs=3"
        )
    )
    assert summary["status"] == "completed"
    assert summary["test/acc"] > 0.5  # 10 synthetic classes: chance is 0.1
