"""callbacks.freeze: the named layers stop training from an epoch on, with or without DDP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cifar_lab.errors import ConfigError
from cifar_lab.models import FastNet
from cifar_lab.recipes.freezing import FreezeLayers
from cifar_lab.tasks.train import train


def _setup(world_size: int = 1, modules=("whiten", "layers.0"), from_epoch: int = 2, max_epochs: int = 4):
    torch.manual_seed(0)
    module = SimpleNamespace(net=FastNet(num_classes=10, widths=[8, 8, 8]))
    trainer = SimpleNamespace(current_epoch=0, world_size=world_size, max_epochs=max_epochs)
    callback = FreezeLayers(list(modules), from_epoch)
    callback.setup(trainer, module, "fit")
    return callback, trainer, module


def _backward(net) -> None:
    net.zero_grad(set_to_none=True)
    net(torch.randn(2, 3, 32, 32)).sum().backward()


def test_one_device_stops_the_gradients_of_the_named_layers_from_their_epoch():
    callback, trainer, module = _setup()
    net = module.net
    frozen = [p for p in [net.whiten.bias, *net.layers[0].parameters()] if p.requires_grad]
    fixed = [p for p in net.parameters() if not p.requires_grad]  # whitening filters, BatchNorm scales
    assert len(frozen) == 5 and fixed
    for epoch in range(2):  # before from_epoch: everything that trained still trains
        trainer.current_epoch = epoch
        callback.on_train_batch_start(trainer, module, None, 0)
        _backward(net)
        assert all(p.grad is not None for p in frozen)
    trainer.current_epoch = 2
    callback.on_train_batch_start(trainer, module, None, 0)
    _backward(net)
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(p.grad is not None for p in net.layers[1].parameters() if p.requires_grad)
    callback.on_train_end(trainer, module)
    assert all(p.requires_grad for p in frozen)
    assert not any(p.requires_grad for p in fixed)  # frozen by design before, still after


def test_ddp_keeps_requires_grad_and_drops_the_gradients_before_each_step():
    callback, trainer, module = _setup(world_size=2)
    trainer.current_epoch = 3
    callback.on_train_batch_start(trainer, module, None, 0)
    _backward(module.net)
    frozen = [p for p in module.net.layers[0].parameters() if p.requires_grad]
    assert frozen and all(p.grad is not None for p in frozen)  # DDP's hooks expect them
    callback.on_before_optimizer_step(trainer, module, None)
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in module.net.layers[1].parameters() if p.requires_grad)


def test_unknown_layer_names_fail_in_one_line_that_lists_the_real_ones():
    with pytest.raises(ConfigError) as info:
        _setup(modules=("layers.0", "stem"))
    message = str(info.value)
    assert "stem" in message and "whiten" in message and "layers" in message and "\n" not in message


def test_a_freeze_after_the_last_epoch_is_refused():
    with pytest.raises(ConfigError, match="from_epoch=4 is not before the end of the 4 training epochs"):
        _setup(from_epoch=4, max_epochs=4)


def test_the_frozen_group_keeps_its_weights_end_to_end(make_cfg, tmp_path):
    """Checkpoints after each epoch: layers.0 stops changing at from_epoch, layers.1 does not."""
    cfg = make_cfg(
        "model=fast",
        "model.widths=[8,16,16]",
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.save_top_k=-1",
        "+callbacks.model_checkpoint.every_n_epochs=1",
        "+callbacks.freeze._target_=cifar_lab.recipes.freezing.FreezeLayers",
        "+callbacks.freeze.modules=[layers.0]",
        "+callbacks.freeze.from_epoch=1",
    )
    summary = train(cfg)
    assert summary["status"] == "completed"
    weights = [
        torch.load(tmp_path / "checkpoints" / f"epoch{epoch:03d}.ckpt", map_location="cpu", weights_only=False)[
            "state_dict"
        ]
        for epoch in range(3)
    ]
    group1 = [k for k in weights[0] if k.startswith("net.layers.0.") and "conv" in k]
    group2 = [k for k in weights[0] if k.startswith("net.layers.1.") and "conv" in k]
    assert group1 and group2
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in group1)
    assert all(not torch.equal(weights[0][k], weights[2][k]) for k in group2)
