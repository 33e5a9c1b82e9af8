"""The large-model recipes (experiment=resnet18, wrn16_8, wrn28_10, vgg16) and their pieces:
EMA of the weights, MixUp/CutMix, step-resolution curves, and the GPU defaults of the trainers."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cifar_lab.errors import ConfigError
from cifar_lab.tasks.train import train

RECIPES = {
    "resnet18": ("cifar_lab.models.ResNet18", {"width": 64}),
    "wrn16_8": ("cifar_lab.models.WideResNet", {"depth": 16, "width": 8}),
    "wrn28_10": ("cifar_lab.models.WideResNet", {"depth": 28, "width": 10}),
    "vgg16": ("cifar_lab.models.VGG16", {"width": 64}),
}
# each recipe's net at a width that trains in seconds on 2 cores (ResNet-18 at width 4 meets a
# oneDNN crash of channels_last 1x1 stride-2 convs with 3-5 input channels: docs/recipes.md)
TINY = {
    "resnet18": ["model.width=8"],
    "wrn16_8": ["model.depth=10", "model.width=2"],
    "wrn28_10": ["model.depth=10", "model.width=2"],
    "vgg16": ["model.width=8"],
}
# synthetic data, 1000 training images: 10 steps an epoch at batch 100 (with fast=False: the
# recipe's epochs= sets the length, which a typed trainer.max_epochs would contradict)
SMALL = [
    "data=synthetic",
    "trainer=cpu",
    "data.batch_size=100",
    "data.eval_batch_size=200",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "callbacks.test_predictions=null",
]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_is_complete_all_training_images_last_weights_flip_tta(make_cfg, name):
    cfg = make_cfg(f"experiment={name}", fast=False)
    target, model = RECIPES[name]
    assert cfg.model._target_ == target and all(cfg.model[k] == v for k, v in model.items())
    assert cfg.data.val_size == 0 and cfg.test_ckpt == "last" and cfg.module.tta_level == 1
    assert cfg.data.batch_size == 500 and cfg.optimizer.nesterov and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler._target_.endswith("warmup_linear_decay") and cfg.scheduler.final_factor == 0.0
    assert cfg.data.flip == "random" and cfg.data.translate == 4
    expected = {"resnet18": (26, 0.2, 12), "wrn16_8": (26, 0.2, 12), "wrn28_10": (26, 0.2, 16), "vgg16": (30, 0.1, 8)}
    assert (cfg.epochs, cfg.optimizer.lr, cfg.data.cutout) == expected[name]


def test_epochs_makes_a_recipe_longer_without_retuning(make_cfg):
    from cifar_lab.training.optim import warmup_linear_decay
    from tests.test_optim import _factors

    short, long = make_cfg("experiment=resnet18", fast=False), make_cfg("experiment=resnet18", "epochs=80", fast=False)
    assert long.epochs == 80 and long.scheduler == short.scheduler and long.optimizer == short.optimizer
    shape = dict(warmup_fraction=long.scheduler.warmup_fraction, initial_factor=long.scheduler.initial_factor)
    for total in (26 * 100, 80 * 100):  # 100 steps an epoch: the warm-up is 20% and the end 0 at any length
        curve = _factors(warmup_linear_decay, total, **shape)
        assert curve[0] == pytest.approx(0.2) and curve[total // 5] == pytest.approx(1.0) and curve[-1] == 0.0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_learns_through_train_at_a_tiny_width(make_cfg, name):
    """Chance is 10%; a net that does not learn (a broken block, a wrong loss) stays near it."""
    summary = train(make_cfg(f"experiment={name}", *TINY[name], *SMALL, "epochs=6", fast=False))
    assert summary["status"] == "completed" and summary["steps"] == 60
    assert summary["test/acc"] > 0.6, summary["test/acc"]


# the EMA test's three runs, also read by the step-resolution test: 2 epochs of 10 steps, deterministic,
# CSV logs every 4 steps (logging draws no random numbers, so the runs train the same weights)
EMA_DECAYS = {"plain": None, "instant": 1e-6, "ema": 0.9}


@pytest.fixture(scope="module")
def resnet18_runs(tmp_path_factory) -> dict:
    """name -> (summary, last.ckpt, the net load_trained rebuilds, run folder), for EMA_DECAYS."""
    from hydra.core.global_hydra import GlobalHydra

    from cifar_lab.runtime.checkpoints.model import load_trained
    from tests.conftest import compose_config

    runs = {}
    for name, decay in EMA_DECAYS.items():
        out = tmp_path_factory.mktemp(f"resnet18_{name}")
        extra = [] if decay is None else [f"module.ema_decay={decay}"]
        overrides = ["experiment=resnet18", *TINY["resnet18"], *SMALL, "epochs=2", "logger=csv", *extra]
        cfg = compose_config([*overrides, "trainer.log_every_n_steps=4", "trainer.deterministic=true"], out)
        summary = train(cfg)
        ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        runs[name] = (summary, ckpt, load_trained(out / "checkpoints" / "last.ckpt").net, out)
    GlobalHydra.instance().clear()
    return runs


def test_ema_scores_checkpoints_and_ends_on_the_average(resnet18_runs):
    """Training is deterministic here, so the EMA runs train the very weights the plain run ends
    on: an average that forgets at once (decay 1e-6) ends there too, a real one (0.9) elsewhere,
    and that average is what the checkpoint holds and the test pass scored."""
    plain, plain_ckpt, _, _ = resnet18_runs["plain"]
    _, instant, _, _ = resnet18_runs["instant"]
    ema, ema_ckpt, net, _ = resnet18_runs["ema"]
    floats = [k for k, v in plain_ckpt["state_dict"].items() if v.is_floating_point()]
    assert all(torch.allclose(instant["state_dict"][k], plain_ckpt["state_dict"][k], atol=1e-4) for k in floats)
    assert max((ema_ckpt["state_dict"][k] - plain_ckpt["state_dict"][k]).abs().max() for k in floats) > 1e-2
    assert any("EMAWeightAveraging" in key for key in ema_ckpt["callbacks"])
    # the final weights are the average (Lightning copies it in at the end of training) ...
    assert all(torch.equal(v, ema_ckpt["state_dict"][f"net.{k}"]) for k, v in net.state_dict().items())
    # ... and the test pass scored them, not the training weights
    assert ema["test/acc"] != plain["test/acc"] or ema["test/loss"] != plain["test/loss"]


@pytest.mark.parametrize("decay", [0.0, 1.0, "high"])
def test_a_bad_ema_decay_is_one_line(make_cfg, decay):
    from cifar_lab.config.check import validate_config

    with pytest.raises(ConfigError, match=r"module.ema_decay=.* must be in \(0, 1\)"):
        validate_config(make_cfg(f"module.ema_decay={decay}"))


def test_mixing_trains_on_soft_targets_and_counts_the_dominant_label():
    from cifar_lab.models import ResNet18
    from cifar_lab.recipes.mixing import BatchMix, batch_mix
    from cifar_lab.training.module import ImageClassifier

    assert batch_mix(10, 0.0, 0.0) is None
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    mixed, targets = BatchMix(10, mixup_alpha=1.0)(images, labels)
    assert targets.shape == (16, 10) and torch.allclose(targets.sum(1), torch.ones(16))
    assert not torch.equal(mixed, images) and (targets.max(1).values >= 0.5).all()

    module = ImageClassifier(ResNet18(10, width=8), torch.optim.SGD, num_classes=10, mixup_alpha=1.0, cutmix_alpha=1.0)
    module.train()
    torch.manual_seed(3)
    loss = module.training_step((images, labels), 0)
    torch.manual_seed(3)
    mixed, soft = module.batch_mix(images, labels)  # the same draw
    logits = module(mixed)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, soft).item(), rel=1e-4)
    # train/acc: a hit when the prediction is the mixed image's dominant label
    dominant = (logits.argmax(1) == soft.argmax(1)).float().mean()
    assert module.train_acc.compute().item() == pytest.approx(dominant.item())
    assert int(module.train_acc.tp.sum() + module.train_acc.fn.sum()) == 16


def test_mixing_alphas_are_checked_in_one_line(make_cfg):
    from cifar_lab.config.check import validate_config

    with pytest.raises(ConfigError, match=r"module.cutmix_alpha=-1.0 must be a number >= 0"):
        validate_config(make_cfg("module.cutmix_alpha=-1.0"))


def test_generic_runs_log_the_loss_and_lr_at_step_resolution(resnet18_runs):
    *_, out = resnet18_runs["plain"]  # experiment=resnet18, 2 epochs of 10 steps, trainer.log_every_n_steps=4
    (metrics,) = out.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    loss_steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    lr_steps = [int(r["step"]) for r in rows if r.get("lr-SGD")]
    assert loss_steps == [4, 8, 12, 16, 20]  # every 4 of the 20 steps, not once an epoch
    assert len(lr_steps) >= 5 and len({float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")}) >= 5


def test_lean_recipes_keep_per_epoch_logging(make_cfg):
    cfg = make_cfg("experiment=speed94", fast=False)
    assert "step_loss_log" not in (cfg.callbacks or {})


# -- the trainers' GPU defaults ----------------------------------------------------------------
@pytest.mark.parametrize("trainer", ["default", "ddp"])
def test_bf16_gpus_train_in_bf16_mixed_by_default_and_under_ddp(make_cfg, monkeypatch, trainer):
    from cifar_lab.runtime import hardware

    cfg = make_cfg(f"trainer={trainer}", fast=False)
    assert cfg.trainer.precision == "auto"
    monkeypatch.setattr(hardware, "gpu_visible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.resolved_precision(cfg.trainer) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.resolved_precision(cfg.trainer) == "32-true"  # a pre-Ampere GPU


def test_ddp_keeps_trainer_gpu_settings(make_cfg):
    gpu, ddp = make_cfg("trainer=gpu", fast=False).trainer, make_cfg("trainer=ddp", fast=False).trainer
    assert ddp.benchmark is True and gpu.benchmark is True and ddp.strategy == "ddp"


def test_on_the_cpu_auto_precision_is_what_trainer_cpu_picks(make_cfg, monkeypatch):
    from cifar_lab.runtime import hardware
    from cifar_lab.runtime.hardware import cpu_precision

    monkeypatch.setattr(hardware, "gpu_visible", lambda: False)
    assert hardware.resolved_precision(make_cfg(fast=False).trainer) == cpu_precision()
    assert hardware.resolved_precision(make_cfg("trainer=ddp", fast=False).trainer) == cpu_precision()
    assert hardware.resolved_precision(make_cfg("trainer.precision=16-mixed", fast=False).trainer) == "16-mixed"


@pytest.mark.parametrize("gpu", [True, False])
def test_matmul_precision_is_high_on_gpus_and_untouched_on_cpus(make_cfg, monkeypatch, gpu):
    from cifar_lab.runtime import hardware

    monkeypatch.setattr(hardware, "gpu_visible", lambda: gpu)
    before = torch.get_float32_matmul_precision()
    try:
        hardware.set_matmul_precision(make_cfg(fast=False))
        assert torch.get_float32_matmul_precision() == ("high" if gpu else before)
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_bad_matmul_precision_is_one_line(make_cfg):
    from cifar_lab.config.check import validate_config

    with pytest.raises(ConfigError, match="float32_matmul_precision='fast' is not one of: highest, high, medium"):
        validate_config(make_cfg("float32_matmul_precision=fast"))


def test_debug_default_runs_on_the_accelerator_in_use(make_cfg):
    assert make_cfg("debug=default", fast=False).trainer.accelerator == "auto"


def test_a_recipe_runs_with_every_piece_switched_to_the_papers_form(make_cfg, tmp_path):
    overrides = [*TINY["resnet18"], *SMALL, "epochs=1", "data.policy=randaugment", "data.cutout_mode=clipped"]
    summary = train(
        make_cfg("experiment=resnet18", *overrides, "data.translate_padding=zeros", "scheduler=step", fast=False)
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == metrics["status"] == "completed" and metrics["steps"] == 10
