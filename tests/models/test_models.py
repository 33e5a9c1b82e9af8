"""Model zoo: shapes, gradients, a real learning step, parameter counts, validation, Hydra configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.errors import ConfigError
from cifar_lab.models import VGG16, FastNet, ResNet18, SeedCNN, WideResNet
from cifar_lab.models.fast import FrozenScaleBatchNorm

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
MODELS = [SeedCNN, FastNet, ResNet18, VGG16, WideResNet]
YAMLS = {
    "seed_cnn": SeedCNN,
    "fast": FastNet,
    "resnet18": ResNet18,
    "vgg16": VGG16,
    "wide": WideResNet,
}


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def batch(n: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % num_classes


@pytest.mark.parametrize("num_classes", [10, 7])
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_logits_shape_and_backward(cls: type[nn.Module], num_classes: int) -> None:
    torch.manual_seed(0)
    model = cls(num_classes=num_classes)
    x, y = batch(4, num_classes)
    logits = model(x)
    assert logits.shape == (4, num_classes)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, num_classes)  # eval mode works with batch size 1


# Plain SGD learning rates small enough to be stable for each net on one tiny batch.
LEARNING_RATES = {SeedCNN: 0.05, FastNet: 0.05, ResNet18: 0.02, VGG16: 0.002, WideResNet: 0.02}


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_two_sgd_steps_reduce_the_loss(cls: type[nn.Module]) -> None:
    """Behavioural check: the net can fit a fixed batch, so gradients flow to useful params."""
    torch.manual_seed(0)
    model = cls(num_classes=7)
    x, y = batch(8, 7, seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LEARNING_RATES[cls])
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0] and losses[2] < 0.95 * losses[0], losses


def test_seed_cnn_matches_the_seed_network() -> None:
    model = SeedCNN(num_classes=10)
    expected = (3 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (8192 * 1024 + 1024) + (1024 * 10 + 10)
    assert n_params(model) == expected == 8_475_530
    kinds = [type(m) for m in model]
    assert kinds == [
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Flatten,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
    ]
    from benchmarks.seed_loop import seed_network

    seed = seed_network()  # the seed document's network, as benchmarks/seed_loop.py writes it out
    seed.load_state_dict(model.state_dict())  # same keys and shapes
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(seed(x), model(x))


def test_wide_resnet_default_is_wrn_16_8() -> None:
    model = WideResNet(num_classes=10)
    assert (model.depth, model.width) == (16, 8)
    assert [len(model.block1), len(model.block2), len(model.block3)] == [2, 2, 2]
    assert model.fc.in_features == 64 * 8
    assert n_params(model) == 10_961_370  # the paper's "11.0M" for WRN-16-8


def test_wide_resnet_depth_must_be_6n_plus_4() -> None:
    with pytest.raises(ConfigError) as info:
        WideResNet(num_classes=10, depth=15)
    msg = str(info.value)
    assert "model.depth=15" in msg and "6n+4" in msg and "\n" not in msg
    assert WideResNet(num_classes=10, depth=10, width=1).depth == 10  # n = 1 is allowed


def test_fastnet_parameter_count() -> None:
    model = FastNet(num_classes=10)
    whiten = 24 * 3 * 2 * 2 + 24
    convs = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 256 * 256 + 256 * 256)
    norms = 2 * 2 * (64 + 256 + 256)
    head = 256 * 10
    assert n_params(model) == whiten + convs + norms + head == 1_972_792
    # frozen: whitening weight and the BatchNorm scales
    assert n_params(model, trainable_only=True) == 1_972_792 - 288 - (64 + 256 + 256) * 2


def test_fastnet_follows_airbench94() -> None:
    model = FastNet(num_classes=10)
    assert model.whiten.out_channels == 24 and model.whiten.kernel_size == (2, 2)
    assert model.whiten.padding == (0, 0)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    assert torch.all(model.whiten.bias == 0)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6
    for bn in norms:
        assert isinstance(bn, FrozenScaleBatchNorm)
        assert bn.momentum == pytest.approx(0.4) and bn.eps == 1e-12
        assert not bn.weight.requires_grad and bn.bias.requires_grad
    # BN params are found by name, as airbench's optimizer does
    norm_params = {n for n, p in model.named_parameters() if "norm" in n and p.requires_grad}
    assert len(norm_params) == 6
    conv = model.layers[1].conv1  # 64 -> 256: first 64 filters are the identity
    expected = torch.zeros(64, 64, 3, 3)
    torch.nn.init.dirac_(expected)
    assert torch.equal(conv.weight[:64], expected)
    assert model.head.bias is None and model.scaling_factor == pytest.approx(1 / 9)
    plain = FastNet(num_classes=10, dirac_init=False, whiten_bias_trainable=False)
    assert not torch.equal(plain.layers[1].conv1.weight[:64], expected)
    assert not plain.whiten.bias.requires_grad


def test_fastnet_options_change_the_net() -> None:
    model = FastNet(num_classes=7, widths=[16, 32, 48], kernel_size=3)
    assert model.whiten.out_channels == 54
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.head.in_features == 48


def test_fastnet_head_pool_is_airbenchs_at_full_size_and_takes_small_crops() -> None:
    torch.manual_seed(0)
    model = FastNet(num_classes=10, widths=[8, 16, 16]).eval()
    for size in (32, 28):  # a 3x3 map before the head: the global max is airbench's MaxPool(3)
        x = torch.randn(2, 3, size, size)
        features = model.layers(model.activ(model.whiten(x)))
        assert features.shape[-2:] == (3, 3)
        expected = model.head(nn.MaxPool2d(3)(features).flatten(1)) * model.scaling_factor
        assert torch.allclose(model(x), expected)
    for size in (24, 9):  # progressive-size crops whose map is 2x2 or 1x1
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 8, 8))


def test_fastnet_residual_is_airbench96s_net() -> None:
    model = FastNet(num_classes=10, widths=[128, 512, 512], residual=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10  # whitening + 3 groups x 3 convs
    group = model.layers[0].eval()
    x = torch.randn(2, 24, 8, 8)
    h = group.activ(group.norm1(group.pool(group.conv1(x))))
    # the identity branch is really added: with conv3 zeroed the group returns GELU(h + bias3)
    with torch.no_grad():
        group.conv3.weight.zero_()
        group.norm3.bias.fill_(0.5)
    assert torch.allclose(group(x), group.activ(h + group.norm3.bias.view(1, -1, 1, 1)))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    plain = FastNet(num_classes=10)
    assert not hasattr(plain.layers[0], "conv3")


def test_reference_parameter_counts() -> None:
    assert n_params(ResNet18(num_classes=10)) == 11_173_962
    assert n_params(VGG16(num_classes=10)) == 14_728_266
    assert n_params(ResNet18(num_classes=10, width=16)) < 1_000_000
    # width 8: every layer at 1/8 of VGG-16's channels (conv weight and bias, BN scale and shift)
    outs = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    convs = sum(9 * c_in * c_out + 3 * c_out for c_in, c_out in zip([3, *outs[:-1]], outs))
    assert n_params(VGG16(num_classes=10, width=8)) == convs + 64 * 10 + 10


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (FastNet, {"widths": [64, 256]}, "model.widths"),
        (FastNet, {"widths": [64, 0, 256]}, "model.widths"),
        (FastNet, {"kernel_size": 0}, "model.kernel_size"),
        (FastNet, {"kernel_size": 10}, "model.kernel_size"),
        (FastNet, {"batchnorm_momentum": 1.0}, "model.batchnorm_momentum"),
        (FastNet, {"scaling_factor": 0.0}, "model.scaling_factor"),
        (FastNet, {"dirac_init": "yes"}, "model.dirac_init"),
        (ResNet18, {"width": 0}, "model.width"),
        (VGG16, {"dropout": 1.0}, "model.dropout"),
        (VGG16, {"width": 0}, "model.width"),
        (WideResNet, {"width": 0}, "model.width"),
        (WideResNet, {"dropout": -0.1}, "model.dropout"),
        (WideResNet, {"depth": True}, "model.depth"),
    ],
)
def test_invalid_hyperparameters_raise_one_line_config_error(cls: type[nn.Module], kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(num_classes=10, **kwargs)
    assert str(info.value).startswith(field) and "\n" not in str(info.value)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_num_classes_is_required_and_checked(cls: type[nn.Module]) -> None:
    with pytest.raises(TypeError):
        cls()
    with pytest.raises(ConfigError, match="num_classes=0"):
        cls(num_classes=0)


# ---- Hydra configs -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_yaml_instantiates_as_a_partial(name: str) -> None:
    pytest.importorskip("hydra")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert cfg._partial_ is True
    model = instantiate(cfg)(num_classes=10)
    assert type(model) is YAMLS[name]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_yaml_lists_every_hyperparameter_with_the_code_default(name: str) -> None:
    """Keeps the configs and the constructors from drifting apart."""
    pytest.importorskip("omegaconf")
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"))
    fields = {k: v for k, v in cfg.items() if not k.startswith("_")}
    params = inspect.signature(YAMLS[name].__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("self", "num_classes")}
    assert set(fields) == set(defaults)
    for key, default in defaults.items():
        expected = list(default) if isinstance(default, tuple) else default
        assert fields[key] == pytest.approx(expected), key


def test_wide_composes_with_command_line_overrides() -> None:
    """What `python train.py model=wide model.width=10` does to the model group."""
    pytest.importorskip("hydra")
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR.parent), version_base=None):
        cfg = compose(overrides=["+model=wide", "model.width=10", "model.depth=10"])
    model = instantiate(cfg.model)(num_classes=7)
    assert isinstance(model, WideResNet) and (model.depth, model.width) == (10, 10)
    assert model.fc.out_features == 7
