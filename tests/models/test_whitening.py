"""airbench's patch-whitening init: whitened patches must come out decorrelated with unit variance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.errors import ConfigError, DataError
from cifar_lab.models import FastNet, ResNet18
from cifar_lab.recipes.whitening import find_whitening_layer, init_whitening


def correlated_images(n: int = 600, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Spatially smoothed noise with mixed channels: strongly correlated patches, like photos.

    600 images also exercise the chunked covariance (chunks of 256, the last one partial).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size + 2, size + 2, generator=g)
    x = F.avg_pool2d(x, 3, stride=1)  # neighbouring pixels correlate
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.4]])
    x = torch.einsum("oc,nchw->nohw", mix, x)  # channels correlate
    return x + 0.3 + 0.2 * torch.randn(x.shape, generator=g)  # a non-zero mean, and a noise floor


def second_moment(feats: torch.Tensor) -> torch.Tensor:
    f = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).double()
    return f.T @ f / f.shape[0]


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_whitened_patches_have_identity_covariance(kernel_size: int) -> None:
    images = correlated_images()
    d = 3 * kernel_size**2
    conv = nn.Conv2d(3, 2 * d, kernel_size, padding=0, bias=True)
    nn.init.constant_(conv.bias, 1.0)
    before = second_moment(F.conv2d(images, torch.eye(d).view(d, 3, kernel_size, kernel_size)))
    assert (before - torch.diag(torch.diagonal(before))).abs().max() > 0.1  # really correlated

    init_whitening(conv, images)

    assert torch.all(conv.bias == 0)
    with torch.no_grad():
        out = conv(images)
    positive, negative = out[:, :d], out[:, d:]
    torch.testing.assert_close(negative, -positive)
    cov = second_moment(positive)
    # Exactly diag(l / (l + eps)) for the patch eigenvalues l (largest first), computed here
    # independently with F.unfold; every l is >> eps = 5e-4, so that is close to I.
    patches = F.unfold(images.double(), kernel_size).transpose(1, 2).reshape(-1, d)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / patches.shape[0]).flip(0)
    expected = torch.diag(eigenvalues / (eigenvalues + 5e-4))
    torch.testing.assert_close(cov, expected, atol=2e-4, rtol=0)
    torch.testing.assert_close(cov, torch.eye(d, dtype=cov.dtype), atol=2e-2, rtol=0)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    assert off_diag.abs().max() < 1e-4
    # Filters ordered by decreasing eigenvalue: the largest-variance direction is scaled least.
    norms = conv.weight[:d].flatten(1).norm(dim=1)
    assert torch.all(norms[1:] >= norms[:-1] * (1 - 1e-4))


def test_eps_damps_low_variance_directions() -> None:
    images = correlated_images(n=300)
    conv = nn.Conv2d(3, 24, 2)
    init_whitening(conv, images, eps=10.0)  # eps far above every eigenvalue: variance << 1
    with torch.no_grad():
        cov = second_moment(conv(images)[:, :12])
    assert torch.diagonal(cov).max() < 0.5


def test_initialises_the_fastnet_whitening_layer() -> None:
    torch.manual_seed(0)
    model = FastNet(num_classes=10)
    layer = find_whitening_layer(model)
    assert layer is model.whiten
    images = torch.randn(64, 3, 32, 32)
    init_whitening(layer, images)
    assert not layer.weight.requires_grad  # the init does not unfreeze it
    with torch.no_grad():
        cov = second_moment(layer(images)[:, :12])
    torch.testing.assert_close(cov, torch.eye(12, dtype=cov.dtype), atol=1e-2, rtol=0)
    assert model(images[:4]).shape == (4, 10)


def test_keeps_the_conv_dtype() -> None:
    conv = nn.Conv2d(3, 24, 2).half()
    init_whitening(conv, correlated_images(n=50))
    assert conv.weight.dtype == torch.float16 and torch.isfinite(conv.weight).all()


def test_find_whitening_layer_is_none_without_one() -> None:
    assert find_whitening_layer(ResNet18(num_classes=10, width=4)) is None


def test_wrong_channel_count_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        init_whitening(nn.Conv2d(3, 12, 2), correlated_images(n=10))
    assert "24" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "images",
    [
        torch.randn(10, 1, 8, 8),  # wrong channel count
        torch.randn(10, 3, 1, 8),  # smaller than the kernel
        torch.randn(3, 8, 8),  # not a batch
        torch.randn(0, 3, 8, 8),  # empty
        torch.full((2, 3, 8, 8), float("nan")),
    ],
)
def test_bad_images_raise_data_error(images: torch.Tensor) -> None:
    with pytest.raises(DataError):
        init_whitening(nn.Conv2d(3, 24, 2), images)
