"""Reusable recipe pieces: Lookahead, TTA, whitening-bias freezing, fractional epochs."""

import json

import pytest
import torch
from torch import nn

from cifar_lab.errors import ConfigError
from cifar_lab.recipes.lookahead import Lookahead
from cifar_lab.recipes.tta import tta_logits
from cifar_lab.tasks.train import train


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


@pytest.mark.parametrize("val_tta_level, expected_val", [(None, {2}), (0, {0})])
def test_val_tta_level_sets_the_validation_views_and_leaves_the_test_pass_alone(
    make_cfg, monkeypatch, val_tta_level, expected_val
):
    import cifar_lab.training.module

    seen: dict[str, set[int]] = {"val": set(), "test": set()}
    original = cifar_lab.training.module.tta_logits

    def recording(module, images, level):
        stage = "test" if module.trainer.testing else "val"
        seen[stage].add(level)
        return original(module, images, level)

    monkeypatch.setattr(cifar_lab.training.module, "tta_logits", recording)
    overrides = ["model=fast", "model.widths=[8,8,8]", "module.tta_level=2", "data.val_size=100"]
    if val_tta_level is not None:
        overrides.append(f"module.val_tta_level={val_tta_level}")
    summary = train(make_cfg(*overrides))
    assert "val/acc" in summary
    assert seen == {"val": expected_val, "test": {2}}


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
        "experiment=speed94",
        "data=synthetic",
        "trainer=cpu",
        "data.val_size=0",
        "data.batch_size=100",
        "data.eval_batch_size=100",
        "epochs=1.5",
        "model.widths=[8,16,16]",
        fast=False,
    )
    summary = train(cfg)
    # synthetic: 1000 train images / 100 = 10 steps an epoch; 1.5 epochs = 15 steps
    assert summary["steps"] == 15 and summary["epochs"] == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("train_time_s", "fit_time_s", "test_time_s", "train_images_per_s"):
        assert metrics[key] > 0, key
    assert metrics["train_time_s"] == pytest.approx(metrics["fit_time_s"] + metrics["test_time_s"], abs=2e-3)
    assert metrics["test/acc"] > 0.3
    # callbacks=none keeps no per-epoch checkpoints, but the final weights are saved for eval/predict
    from cifar_lab.runtime.checkpoints.model import load_trained

    loaded = load_trained(tmp_path / "checkpoints" / "last.ckpt")
    assert loaded.raw["global_step"] == 15 and sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.ckpt"
    ]
    assert sum(p.numel() for p in loaded.net.parameters()) == metrics["params"]


def test_speed96_recipe_composes_airbench96_and_runs(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=speed96",
        "data=synthetic",
        "trainer=cpu",
        "data.val_size=0",
        "data.batch_size=100",
        "data.eval_batch_size=100",
        "epochs=1",
        "model.widths=[8,16,16]",
        fast=False,
    )
    assert cfg.model.residual is True and cfg.data.cutout == 12 and cfg.data.translate == 4
    assert cfg.optimizer.lr == 9.0 and cfg.scheduler.final_factor == 0.0 and cfg.epochs == 1
    assert cfg.callbacks.lookahead is not None and cfg.module.tta_level == 2  # inherited from speed94
    summary = train(cfg)
    assert summary["steps"] == 10
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    from cifar_lab.models import FastNet

    def params(**kwargs) -> int:
        return sum(p.numel() for p in FastNet(num_classes=10, widths=[8, 16, 16], **kwargs).parameters())

    assert metrics["params"] == params(residual=True) > params()  # the third conv of each group
    assert metrics["test/acc"] > 0.2  # one epoch, 12-px cutout; chance is 0.1


def test_cpu90_recipe_composes_for_cpus_and_trains_small_then_full_size(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("experiment=cpu90", "data=synthetic", fast=False)
    assert cfg.trainer.accelerator == "cpu"  # trainer=cpu: bf16 and threads picked for the CPU
    assert list(cfg.model.widths) == [32, 192, 192] and cfg.data.batch_size == 256
    assert cfg.data.crop == 28 and 0 < cfg.data.crop_epochs < cfg.epochs
    assert cfg.callbacks.lookahead is not None and cfg.module.whitening_init  # speed94's pieces
    cfg = make_cfg(
        "experiment=cpu90",
        "data=synthetic",
        "data.batch_size=100",
        "data.eval_batch_size=100",
        "epochs=2",
        "data.crop_epochs=1",
        "model.widths=[8,16,16]",
        fast=False,
    )
    from cifar_lab.models import FastNet

    seen, original = [], FastNet.forward

    def recording_forward(self, x):
        seen.append((self.training, x.shape[-1]))
        return original(self, x)

    monkeypatch.setattr(FastNet, "forward", recording_forward)
    summary = train(cfg)
    assert summary["steps"] == 20
    assert seen[0] == (False, 28)  # the pre-flight check that the net takes 28x28 crops
    fit = seen[seen.index((True, 28)) :]
    train_sizes = [size for training, size in fit if training]
    assert train_sizes[:10] == [28] * 10 and set(train_sizes[10:]) == {32}  # epoch 0 cropped
    assert {size for training, size in fit if not training} == {32}  # the test pass: full size
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.3  # it learns across the change of size; chance is 0.1


def _bias_freeze(after_epochs: int, world_size: int):
    """FreezeWhiteningBias set up for a fit of FastNet, with a stand-in trainer whose epoch tests move."""
    from types import SimpleNamespace

    from cifar_lab.models import FastNet
    from cifar_lab.recipes.whitening import FreezeWhiteningBias
    from cifar_lab.training.module import ImageClassifier

    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10)
    trainer = SimpleNamespace(current_epoch=0, world_size=world_size)
    callback = FreezeWhiteningBias(after_epochs)
    callback.setup(trainer, module, "fit")
    return callback, trainer, module


def test_whitening_bias_freezes_after_its_epochs():
    """Under DDP the bias trains for whiten_bias_epochs epochs; after that its gradient is dropped
    before every optimizer step (requires_grad stays on: DDP forbids changing it mid-run)."""
    callback, trainer, module = _bias_freeze(after_epochs=2, world_size=2)
    bias = module.net.whiten.bias
    kept = []
    for epoch in range(4):
        trainer.current_epoch = epoch
        callback.on_train_batch_start(trainer, module, None, 0)
        bias.grad = torch.ones_like(bias)
        callback.on_before_optimizer_step(trainer, module, None)
        kept.append(bias.grad is not None)
        assert bias.requires_grad
    assert kept == [True, True, False, False]
    assert module.net.whiten.weight.grad is None and not module.net.whiten.weight.requires_grad  # only the bias


@pytest.mark.parametrize(("world_size", "stops_gradient"), [(1, True), (2, False)])
def test_whitening_bias_gradient_stops_on_one_device(world_size, stops_gradient):
    """On one device requires_grad goes off after whiten_bias_epochs, so backward skips the first
    conv's input gradient; under DDP (world_size > 1) it must stay on and the grad is dropped.
    After the fit the bias trains again."""
    callback, trainer, module = _bias_freeze(after_epochs=1, world_size=world_size)
    bias = module.net.whiten.bias
    callback.on_train_batch_start(trainer, module, None, 0)
    assert bias.requires_grad
    module(torch.randn(4, 3, 32, 32)).sum().backward()
    assert bias.grad is not None
    module.zero_grad(set_to_none=True)
    trainer.current_epoch = 1
    callback.on_train_batch_start(trainer, module, None, 0)
    assert bias.requires_grad is not stops_gradient
    module(torch.randn(4, 3, 32, 32)).sum().backward()
    callback.on_before_optimizer_step(trainer, module, None)
    assert bias.grad is None
    callback.on_train_end(trainer, module)
    assert bias.requires_grad


def test_whitening_bias_freeze_reaches_training(make_cfg, tmp_path):
    """module.whiten_bias_epochs through train(): the bias trains in its epoch, then stays put
    (the per-epoch checkpoints hold it), while the rest of the net keeps training."""
    from cifar_lab.runtime.checkpoints.files import load_checkpoint

    cfg = make_cfg(
        "experiment=speed94",
        "data=synthetic",
        "trainer=cpu",
        "epochs=3",
        "module.whiten_bias_epochs=1",
        "module.tta_level=0",
        "model.widths=[8,16,16]",
        "data.batch_size=100",
        "callbacks.lookahead=null",  # its pulls would move a frozen bias once, to its average
        "+callbacks.every_epoch._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        f"+callbacks.every_epoch.dirpath={tmp_path}/epochs",
        "+callbacks.every_epoch.save_top_k=-1",
        "+callbacks.every_epoch.filename='e{epoch}'",
        fast=False,
    )
    train(cfg)
    states = [load_checkpoint(tmp_path / "epochs" / f"eepoch={epoch}.ckpt")["state_dict"] for epoch in range(3)]
    bias = [state["net.whiten.bias"] for state in states]
    head = [state["net.head.weight"] for state in states]
    assert bias[0].abs().sum() > 0  # trained in epoch 0 (the init zeroes it)
    assert torch.equal(bias[0], bias[1]) and torch.equal(bias[1], bias[2])  # frozen from epoch 1 on
    assert not torch.equal(head[1], head[2])  # the rest still trains


@pytest.mark.parametrize(("eps", "low", "high"), [(5e-4, 0.9, 1.1), (10.0, 0.0, 0.5)])
def test_whitening_eps_reaches_the_init(eps, low, high):
    """module.whitening_eps is the eps of the whitening init: the whitened patches keep unit
    variance at airbench's 5e-4, and are damped when eps is far above the patch variances."""
    from types import SimpleNamespace

    from cifar_lab.models import FastNet
    from cifar_lab.recipes.whitening import WhiteningInit
    from cifar_lab.training.module import ImageClassifier
    from cifar_lab.training.timing import TrainingTimer

    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10)
    datamodule = SimpleNamespace(train_sample=lambda n, device: images[:n])
    timer = TrainingTimer()
    trainer = SimpleNamespace(datamodule=datamodule, ckpt_path=None, callbacks=[timer])  # a fresh fit
    WhiteningInit(eps).on_fit_start(trainer, module)
    with torch.no_grad():
        features = module.net.whiten(images)[:, :12]
    variance = features.square().mean(dim=(0, 2, 3))
    assert low < variance.mean() < high
    assert timer.clock.seconds > 0 and not timer.clock.running  # the init is training time


def test_whitening_init_leaves_a_resumed_fit_alone():
    """A resumed fit's whitening layer comes from its checkpoint: the init does not overwrite it."""
    from types import SimpleNamespace

    from cifar_lab.models import FastNet
    from cifar_lab.recipes.whitening import WhiteningInit
    from cifar_lab.training.module import ImageClassifier

    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10)
    before = module.net.whiten.weight.clone()
    datamodule = SimpleNamespace(train_sample=lambda n, device: torch.randn(n, 3, 32, 32))
    WhiteningInit().on_fit_start(SimpleNamespace(datamodule=datamodule, ckpt_path="last.ckpt"), module)
    assert torch.equal(module.net.whiten.weight, before)
    WhiteningInit().on_fit_start(SimpleNamespace(datamodule=datamodule, ckpt_path=None), module)
    assert not torch.equal(module.net.whiten.weight, before)


@pytest.mark.parametrize("dropout", [None, 0.3], ids=["fast", "wide_with_dropout"])
def test_device_warmup_leaves_weights_statistics_and_rng_as_they_were(monkeypatch, dropout):
    """The GPU warm-up (forced here on the CPU) runs real train and TTA passes, then restores
    everything training depends on; its seconds are kept out of the training clock. Dropout
    draws from the device's generator (the CPU's here): that state is restored too."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from cifar_lab.models import FastNet, WideResNet
    from cifar_lab.recipes import device_warmup as warmup
    from cifar_lab.training.module import ImageClassifier
    from cifar_lab.training.timing import TrainingTimer

    net = (
        FastNet(num_classes=10, widths=[8, 8, 8])
        if dropout is None
        else WideResNet(num_classes=10, depth=10, width=1, dropout=dropout)
    )
    module = ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=10, tta_level=2)
    datamodule = SimpleNamespace(
        batch_size=16, eval_batch_size=8, train_sample=lambda n, device: torch.zeros(n, 3, 32, 32)
    )
    timer = TrainingTimer()
    trainer = SimpleNamespace(
        datamodule=datamodule,
        world_size=1,
        ckpt_path=None,
        precision_plugin=SimpleNamespace(forward_context=nullcontext),
        callbacks=[timer],
    )
    monkeypatch.setattr(ImageClassifier, "trainer", property(lambda self: trainer))
    calls = []
    original_forward = ImageClassifier.forward
    monkeypatch.setattr(ImageClassifier, "forward", lambda self, x: calls.append(len(x)) or original_forward(self, x))
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    rng = torch.get_rng_state()

    assert not warmup.needs_warm_up(module)  # CPU: nothing to warm
    warmup.DeviceWarmup().on_fit_start(trainer, module)
    assert calls == [] and timer.clock.excluded["warmup"] == 0
    monkeypatch.setattr(warmup, "needs_warm_up", lambda module: True)
    warmup.DeviceWarmup().on_fit_start(trainer, module)
    assert calls[:2] == [16, 16] and calls[2:] == [8] * 6  # two train steps, six TTA views
    after = module.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert all(p.grad is None for p in module.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert timer.clock.excluded["warmup"] > 0 and timer.clock.seconds == 0


def test_checkpoint_holds_one_copy_of_the_weights():
    from cifar_lab.models import SeedCNN
    from cifar_lab.training.module import ImageClassifier

    module = ImageClassifier(SeedCNN(num_classes=10), optimizer=torch.optim.SGD, num_classes=10)
    keys = list(module.state_dict())
    assert keys and all(k.startswith("net.") for k in keys), keys


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=fast", "data.crop=8"], "data.crop=8 does not fit model FastNet: pick a crop size it takes"),
        (
            ["model=fast", "data.crop=[8,28]", "data.crop_epochs=[1,1]"],
            "data.crop=[8, 28] (size 8) does not fit model FastNet",
        ),
        (["model=seed_cnn", "data.crop=28"], "data.crop=28 does not fit model SeedCNN"),
        (["data.crop=40"], "data.crop=40 is larger than the 32px images"),
        (["data.crop=28", "data.translate=32"], "data.translate=32 is too large for the 32px images"),
    ],
)
def test_a_crop_the_model_cannot_take_fails_before_training_in_one_line(make_cfg, tmp_path, overrides, message):
    cfg = make_cfg("data=synthetic", "data.val_size=0", "data.crop_epochs=1", "epochs=3", *overrides, fast=False)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("mode", [True, "max-autotune-no-cudagraphs"])
def test_module_compile_compiles_the_lightning_module_as_lightning_supports(make_cfg, mode):
    """module.compile goes through Lightning's from_compiled: the same LightningModule (its
    state_dict keys unchanged) with compiled steps, marked compiled for the trainer, whose DDP
    wrapper calls those steps (there dynamo sees the DDP module and splits the graph by bucket).
    Compiling itself happens at the first step (too slow for the suite on 2 cores: gpu_run.sh's
    faults part trains compiled on a GPU)."""
    from cifar_lab.data.datamodule import CIFARDataModule  # noqa: F401  (the build needs the data)
    from cifar_lab.training.build import build_datamodule, build_module
    from cifar_lab.training.module import ImageClassifier

    cfg = make_cfg("model=seed_cnn", f"module.compile={str(mode).lower()}")
    datamodule = build_datamodule(cfg, stage="fit")
    module = build_module(cfg, datamodule)
    assert isinstance(module, ImageClassifier) and module._compiler_ctx["compiler"] == "dynamo"
    assert module.forward is not module._compiler_ctx["original_forward"]  # dynamo-wrapped
    assert list(module.state_dict()) == list(build_module(make_cfg("model=seed_cnn"), datamodule).state_dict())
    assert build_module(make_cfg("model=seed_cnn"), datamodule)._compiler_ctx is None
