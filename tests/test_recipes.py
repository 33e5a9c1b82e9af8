"""Reusable recipe pieces: Lookahead, TTA, whitening-bias freezing, fractional epochs."""

import json

import pytest
import torch
from torch import nn

from cifar_lab.recipes.lookahead import Lookahead
from cifar_lab.recipes.tta import tta_logits
from cifar_lab.train import train


class _Recorder(nn.Module):
    """Returns the mean of each image as one 'logit', to see which views TTA averaged."""

    def __init__(self):
        super().__init__()
        self.views = []

    def forward(self, x):
        self.views.append(x.clone())
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_tta_levels_average_the_documented_views():
    images = torch.randn(4, 3, 8, 8)
    net = _Recorder()
    assert torch.equal(tta_logits(net, images, 0), net(images)[:, :1])
    net.views.clear()
    tta_logits(net, images, 1)
    assert len(net.views) == 2 and torch.equal(net.views[1], images.flip(-1))
    net.views.clear()
    out = tta_logits(net, images, 2)
    assert len(net.views) == 6
    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    assert any(torch.equal(v, padded[..., 0:8, 0:8]) for v in net.views)
    assert any(torch.equal(v, padded[..., 2:10, 2:10]) for v in net.views)
    means = [v.mean(dim=(1, 2, 3)) for v in net.views]
    originals = [m for v, m in zip(net.views, means) if torch.equal(v, images) or torch.equal(v, images.flip(-1))]
    shifted = [m for v, m in zip(net.views, means) if not (torch.equal(v, images) or torch.equal(v, images.flip(-1)))]
    assert len(originals) == 2 and len(shifted) == 4
    expected = 0.5 * torch.stack(originals).mean(0) + 0.5 * torch.stack(shifted).mean(0)
    assert torch.allclose(out.squeeze(1), expected, atol=1e-6)
    with pytest.raises(ValueError):
        tta_logits(net, images, 3)


class _FakeTrainer:
    def __init__(self, total):
        self.estimated_stepping_batches = total
        self.global_step = 0


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2, bias=False)
        self.device = torch.device("cpu")


def test_lookahead_pulls_weights_toward_their_average_and_ends_on_it():
    module, trainer = _Holder(), _FakeTrainer(total=10)
    callback = Lookahead(every=5, decay=0.5, warmup_power=0.0)
    callback.on_train_start(trainer, module)
    start = module.net.weight.detach().clone()
    with torch.no_grad():
        module.net.weight.add_(1.0)  # "training" moved the weights by 1
    trainer.global_step = 5
    callback.on_train_batch_end(trainer, module)
    # average = lerp(start, start + 1, 0.5) = start + 0.5, and the weights jump there
    assert torch.allclose(module.net.weight, start + 0.5)
    with torch.no_grad():
        module.net.weight.add_(1.0)
    trainer.global_step = 10
    callback.on_train_batch_end(trainer, module)  # last step: weights become the average as-is
    assert torch.allclose(module.net.weight, start + 0.5)
    state = callback.state_dict()
    restored = Lookahead()
    restored.load_state_dict(state)
    assert torch.equal(restored.average["weight"], callback.average["weight"])


def test_lookahead_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Lookahead(every=0)


def test_speed94_recipe_runs_end_to_end_with_fractional_epochs(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=speed94", "data=synthetic", "trainer=cpu", "data.val_size=0", "data.batch_size=100", "data.eval_batch_size=100",
        "epochs=1.5", "model.widths=[8,16,16]", fast=False,
    )
    summary = train(cfg)
    # synthetic: 1000 train images / 100 = 10 steps an epoch; 1.5 epochs = 15 steps
    assert summary["steps"] == 15 and summary["epochs"] == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("train_time_s", "fit_time_s", "test_time_s", "train_images_per_s"):
        assert metrics[key] > 0, key
    assert metrics["train_time_s"] == pytest.approx(metrics["fit_time_s"] + metrics["test_time_s"], abs=2e-3)
    assert metrics["test/acc"] > 0.3


def test_speed96_recipe_composes_airbench96_and_runs(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=speed96", "data=synthetic", "trainer=cpu", "data.val_size=0", "data.batch_size=100", "data.eval_batch_size=100",
        "epochs=1", "model.widths=[8,16,16]", fast=False,
    )
    assert cfg.model.residual is True and cfg.data.cutout == 12 and cfg.data.translate == 4
    assert cfg.optimizer.lr == 9.0 and cfg.scheduler.final_factor == 0.0 and cfg.epochs == 1
    assert cfg.callbacks.lookahead is not None and cfg.module.tta_level == 2  # inherited from speed94
    summary = train(cfg)
    assert summary["steps"] == 10
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["params"] > 0 and 0.0 <= metrics["test/acc"] <= 1.0


def test_whitening_bias_freezes_after_its_epochs(monkeypatch):
    """The bias trains for whiten_bias_epochs epochs; after that its gradient is dropped before
    every optimizer step (requires_grad stays on: DDP forbids changing it mid-run)."""
    from cifar_lab.models import FastNet
    from cifar_lab.module import ImageClassifier

    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10, whiten_bias_epochs=2)
    monkeypatch.setattr(ImageClassifier, "current_epoch", property(lambda self: self._epoch))
    kept = []
    for epoch in range(4):
        module._epoch = epoch
        module.net.whiten.bias.grad = torch.ones_like(module.net.whiten.bias)
        module.on_before_optimizer_step(None)
        kept.append(module.net.whiten.bias.grad is not None)
        assert module.net.whiten.bias.requires_grad
    assert kept == [True, True, False, False]


def test_checkpoint_holds_one_copy_of_the_weights():
    from cifar_lab.models import SeedCNN
    from cifar_lab.module import ImageClassifier

    module = ImageClassifier(SeedCNN(num_classes=10), optimizer=torch.optim.SGD, num_classes=10)
    keys = list(module.state_dict())
    assert keys and all(k.startswith("net.") for k in keys), keys
