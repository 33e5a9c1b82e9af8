"""Every config option composes; bad values are refused before any work, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import HydraException

from cifar_lab.config.check import validate_config
from cifar_lab.errors import ConfigError
from tests.conftest import CONF_DIR, REPO_ROOT

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.floors
@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v))
def test_every_group_option_composes_and_validates(make_cfg, tmp_path, group, option):
    extra = [f"data.path={tmp_path}"] if (group, option) == ("data", "folder") else []
    cfg = make_cfg(f"{group}={option}", *extra, fast=False)
    needs = _missing_extra(group, option)
    if needs is None:
        validate_config(cfg)
    else:  # e.g. logger=wandb in .ci/floors' venv, which installs none of the logger extras
        with pytest.raises(ConfigError, match=rf"^logger={option} needs the {needs} extra: pip install"):
            validate_config(cfg)


def _missing_extra(group: str, option: str) -> str | None:
    """The extra a logger option needs when its library is not installed here, else None."""
    import importlib.util

    from cifar_lab.training.loggers import EXTRAS

    for extra, modules in EXTRAS.values():
        if group == "logger" and extra == option and not all(importlib.util.find_spec(m) for m in modules):
            return extra
    return None


@pytest.mark.floors
def test_defaults_are_the_documented_ones(make_cfg):
    cfg = make_cfg(fast=False)
    choices = cfg.hydra.runtime.choices
    assert (choices.data, choices.model, choices.optimizer, choices.scheduler) == (
        "cifar10",
        "fast",
        "sgd",
        "warmup_linear",
    )
    assert cfg.data.val_size == 5000 and cfg.trainer.accelerator == "auto"


def test_experiment_seed_is_the_seed_documents_setup(make_cfg):
    cfg = make_cfg("experiment=seed", fast=False)
    assert cfg.model._target_.endswith("SeedCNN")
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0 and not cfg.optimizer.nesterov
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 10
    assert (cfg.data.flip, cfg.data.translate, cfg.data.cutout) == ("none", 0, 0)
    assert not cfg.scheduler


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-1", "optimizer.lr=-1 must be a positive number"),
        ("optimizer.lr=abc", "optimizer.lr='abc' must be a positive number"),
        ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
        ("data.batch_size=1.5", "data.batch_size=1.5 must be a positive integer"),
        ("data.val_size=50000", "data.val_size=50000 is too large"),
        ("data.val_size=-3", "data.val_size=-3 must be a whole number >= 0"),
        ("data.flip=sideways", "data.flip='sideways' is not one of"),
        ("data.crop=-4", "data.crop=-4 must be a whole number of pixels >= 0"),
        ("data.crop_epochs=3", "data.crop_epochs=3 needs a crop size: set data.crop"),
        (
            "data.crop=[24,28]",
            "data.crop has 2 size(s) but data.crop_epochs has 1 epoch count(s): give one count per size",
        ),
        ("data.crop=[24,-1]", "data.crop=[24, -1] must be a whole number of pixels >= 0, or a list of them"),
        ("trainer.precision=7", "trainer.precision='7' is not one of"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be a positive integer"),
        ("module.label_smoothing=1.5", "module.label_smoothing=1.5 must be in [0, 1)"),
        ("module.tta_level=3", "module.tta_level=3 is not one of (0, 1, 2)"),
        ("module.val_tta_level=6", "module.val_tta_level=6 is not one of (0, 1, 2), or null (as tta_level)"),
        ("test_ckpt=worst", "test_ckpt='worst' must be 'best' or 'last'"),
        ("ckpt_path=/nonexistent.ckpt", "is not a file"),
        ("cpu_threads=0", "cpu_threads=0 must be a positive integer, or null"),
        ("epochs=0", "epochs=0 must be a positive number, fractions allowed"),
        ("data.mean=0.5", "data.mean=0.5 must be 3 numbers, one per RGB channel"),
        ("data.std=[0.5,0.5]", "data.std=[0.5, 0.5] must be 3 numbers, one per RGB channel"),
        ("data.std=[0.2,0,0.2]", "data.std=[0.2, 0, 0.2] must be > 0 in every channel"),
        ("module.norm_lr_scale=abc", "module.norm_lr_scale='abc' must be a number > 0"),
        ("module.whitening_eps=0", "module.whitening_eps=0 must be a number > 0"),
        ("module.whiten_bias_epochs=-1", "module.whiten_bias_epochs=-1 must be a whole number >= 0, or null"),
        ("scheduler.warmup_fraction=1.5", "scheduler.warmup_fraction=1.5 must be a number in [0, 1)"),
        ("scheduler.final_factor=-0.1", "scheduler.final_factor=-0.1 must be a number >= 0"),
    ],
)
def test_invalid_values_raise_one_clear_line(make_cfg, override, message):
    cfg = make_cfg("data=cifar10", override, fast=False)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "total"),
    [
        (["data.crop=28", "epochs=5", "data.crop_epochs=5"], 5),
        (["data.crop=28", "epochs=2.5", "data.crop_epochs=3"], 2.5),
        (["data.crop=[24,28]", "data.crop_epochs=[2,2]", "trainer.max_epochs=4"], 4),
    ],
)
def test_crop_epochs_that_leave_no_full_size_epoch_are_refused(make_cfg, overrides, total):
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg("data=cifar10", *overrides, fast=False))
    assert f"covers all {total} training epochs" in str(err.value) and "\n" not in str(err.value)
    validate_config(make_cfg("data=cifar10", "data.crop=28", "epochs=5", "data.crop_epochs=4", fast=False))  # one left
    # a stage at the images' own size is full size
    validate_config(make_cfg("data=cifar10", "data.crop=[28,32]", "data.crop_epochs=[9,4]", "epochs=13", fast=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+callbacks.freeze.modules=layers.0", "+callbacks.freeze.from_epoch=1"],
            "callbacks.freeze.modules='layers.0' must be a list",
        ),
        (
            ["+callbacks.freeze.modules=[layers.0]", "+callbacks.freeze.from_epoch=-1"],
            "callbacks.freeze.from_epoch=-1 must be a whole number >= 0",
        ),
        (
            ["+callbacks.freeze.modules=[layers.0]", "+callbacks.freeze.from_epoch=13", "epochs=12.5"],
            "from_epoch=13 is not before the end of the 12.5 training epochs",
        ),
    ],
)
def test_bad_freeze_settings_fail_before_any_work(make_cfg, overrides, message):
    freeze = "+callbacks.freeze._target_=cifar_lab.recipes.freezing.FreezeLayers"
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg("data=cifar10", freeze, *overrides, fast=False))
    assert message in str(err.value) and "\n" not in str(err.value)
    validate_config(
        make_cfg(
            "data=cifar10",
            freeze,
            "+callbacks.freeze.modules=[layers.0]",
            "+callbacks.freeze.from_epoch=12",
            "epochs=12.5",
            fast=False,
        )
    )


def test_synthetic_val_size_is_checked_against_its_size(make_cfg):
    cfg = make_cfg("data.val_size=1000")  # synthetic: 10 classes x 100
    with pytest.raises(ConfigError, match="training split has 1000 images"):
        validate_config(cfg)


def test_folder_data_without_path_says_how_to_fix(make_cfg):
    cfg = make_cfg("data=folder", fast=False)
    with pytest.raises(ConfigError, match=r"data=folder needs a path: add data.path=PATH"):
        validate_config(cfg)


def test_folder_data_with_missing_path(make_cfg, tmp_path):
    cfg = make_cfg("data=folder", f"data.path={tmp_path / 'nope'}", fast=False)
    with pytest.raises(ConfigError, match="does not exist"):
        validate_config(cfg)


def test_unknown_model_lists_the_choices(make_cfg):
    with pytest.raises(HydraException) as err:
        make_cfg("model=nope", fast=False)
    text = str(err.value)
    assert "model/nope" in text and "fast" in text and "resnet18" in text


def _run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_value_exits_2_with_one_line_and_no_training(tmp_path):
    result = _run_train("data=synthetic", "optimizer.lr=-0.1", f"paths.log_dir={tmp_path}/out", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: optimizer.lr=-0.1 must be a positive number"]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("out/**/checkpoints"))


def test_cli_unknown_model_exits_nonzero_naming_the_choices(tmp_path):
    result = _run_train("model=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr and "wide" in result.stderr


@pytest.mark.parametrize(
    "flags,expected",
    [("fpu avx2 avx512f avx512_bf16", "bf16-mixed"), ("fpu avx2 amx_bf16", "bf16-mixed"), ("fpu avx2", "32-true")],
)
def test_cpu_trainer_picks_bf16_only_where_the_cpu_has_it(tmp_path, flags, expected):
    from cifar_lab.runtime.hardware import cpu_precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_precision(str(cpuinfo)) == expected
    assert cpu_precision(str(tmp_path / "absent")) == "32-true"


def test_cpu_trainer_resolves_precision(make_cfg):
    from cifar_lab.runtime.hardware import cpu_precision

    cfg = make_cfg("trainer=cpu", fast=False)
    assert cfg.trainer.precision == cpu_precision()  # what this machine's CPU flags give
    validate_config(cfg)


@pytest.mark.parametrize(
    ("cpu_max", "expected"), [(None, "affinity"), ("max 100000", "affinity"), ("150000 100000", 2), ("50000 100000", 1)]
)
def test_usable_cpus_respects_a_cgroup_quota(tmp_path, cpu_max, expected):
    import os

    from cifar_lab.runtime.hardware import usable_cpus

    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    want = affinity if expected == "affinity" else min(affinity, expected)
    assert usable_cpus(str(tmp_path)) == want


@pytest.mark.parametrize(("overrides", "threads"), [(["trainer=cpu"], "usable"), (["trainer=cpu", "cpu_threads=1"], 1)])
def test_cpu_training_sets_torch_threads(make_cfg, monkeypatch, overrides, threads):
    import torch

    from cifar_lab.runtime import hardware
    from cifar_lab.runtime.hardware import usable_cpus

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    hardware.set_cpu_threads(make_cfg(*overrides, fast=False))
    assert calls == [usable_cpus() if threads == "usable" else threads]
    calls.clear()
    hardware.set_cpu_threads(make_cfg("trainer=gpu", fast=False))
    assert calls == []  # GPU runs keep torch's own choice for their host-side work
    hardware.set_cpu_threads(make_cfg("trainer=gpu", "cpu_threads=3", fast=False))
    assert calls == [3]  # unless the user asks


@pytest.mark.parametrize("gpu", [False, True])
def test_the_default_auto_accelerator_gets_cpu_threads_when_it_trains_on_the_cpu(make_cfg, monkeypatch, gpu):
    import torch

    from cifar_lab.runtime import hardware
    from cifar_lab.runtime.hardware import usable_cpus

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(hardware, "gpu_visible", lambda: gpu)
    cfg = make_cfg(fast=False)
    assert cfg.trainer.accelerator == "auto"
    hardware.set_cpu_threads(cfg)
    assert calls == ([] if gpu else [usable_cpus()])


def test_config_checks_the_tta_levels_the_recipe_implements():
    from cifar_lab.config import module as config
    from cifar_lab.recipes.tta import TTA_LEVELS

    assert config.TTA_LEVELS == TTA_LEVELS


def _module(**options):
    import torch

    from cifar_lab.models import FastNet
    from cifar_lab.training.module import ImageClassifier

    net = FastNet(num_classes=10, widths=[8, 8, 8])
    return ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=10, **options)


def _whitening_init(**options):
    from cifar_lab.recipes.whitening import WhiteningInit

    return WhiteningInit(**options)


def _bias_freeze(**options):
    from cifar_lab.recipes.whitening import FreezeWhiteningBias

    return FreezeWhiteningBias(**options)


def _datamodule(**options):
    from cifar_lab.data.datamodule import CIFARDataModule
    from cifar_lab.data.sources import SyntheticSource

    return CIFARDataModule(source=SyntheticSource(train_per_class=10, test_per_class=2), **options)


def _augment(**options):
    from cifar_lab.data.loader import AugmentSpec

    return AugmentSpec(**options)


def _decoupled_sgd(**options):
    import torch

    from cifar_lab.training.optim import decoupled_sgd

    args = {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 64, **options}
    return decoupled_sgd([torch.nn.Parameter(torch.zeros(2))], **args)


@pytest.mark.parametrize(
    ("override", "build", "options"),
    [
        ("module.tta_level=5", _module, {"tta_level": 5}),
        ("module.whitening_eps=0", _whitening_init, {"eps": 0}),
        ("module.whiten_bias_epochs=-1", _bias_freeze, {"after_epochs": -1}),
        ("module.label_smoothing=1.5", _module, {"label_smoothing": 1.5}),
        ("data.val_size=-1", _datamodule, {"val_size": -1}),
        ("data.eval_batch_size=0", _datamodule, {"eval_batch_size": 0}),
        ("data.flip=sideways", _augment, {"flip": "sideways"}),
        ("data.cutout=-2", _augment, {"cutout": -2}),
        ("optimizer=sgd_decoupled optimizer.momentum=1.0", _decoupled_sgd, {"momentum": 1.0}),
        ("optimizer=sgd_decoupled optimizer.lr=-1", _decoupled_sgd, {"lr": -1}),
    ],
)
def test_a_rule_has_one_home_the_config_check_and_the_constructor_say_the_same_line(make_cfg, override, build, options):
    """The config check (before torch loads) and the constructor that receives the value (for
    code that builds it directly) raise the same line: both call the same rule."""
    with pytest.raises(ConfigError) as from_config:
        validate_config(make_cfg(*override.split()))
    with pytest.raises(ConfigError) as from_constructor:
        build(**options)
    assert str(from_config.value) == str(from_constructor.value)
