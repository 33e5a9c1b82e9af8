"""airbench's patch-whitening initialisation for a model's first conv.

The first conv's filters are set to the eigenvectors of the k x k patch covariance of training
images, each scaled by 1/sqrt(eigenvalue + eps): its outputs are decorrelated, unit-variance
patch features (ZCA-like, "PCA whitening"), which makes the rest of the net train much faster.
Each filter appears with both signs (out_channels = 2 * c * k * k) so that the GELU after the
layer drops no information.

As in airbench the "covariance" is the uncentered second moment E[p p^T]: inputs are already
per-channel normalized, so patches are near zero-mean and the bias starts at zero (airbench then
trains that bias for a few epochs).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from cifar_lab.config.module import validate_module_options
from cifar_lab.errors import ConfigError, DataError
from cifar_lab.recipes.freezing import FreezeParameters
from cifar_lab.training.timing import training_timer

# airbench's eps (module.whitening_eps, whose measured evidence is in conf/train.yaml): the default of
# WhiteningInit and init_whitening, written once
EPS = 5e-4
_CHUNK = 256  # images per unfold: bounds memory (5000 images at once is ~0.25 GB of patches)


def find_whitening_layer(model: nn.Module) -> nn.Conv2d | None:
    """The model's patch-whitening conv (``model.whiten``), or None if it has none.

    Also looks through a ``torch.compile`` wrapper (``_orig_mod``).
    """
    for candidate in (model, getattr(model, "_orig_mod", None)):
        layer = getattr(candidate, "whiten", None) if candidate is not None else None
        if isinstance(layer, nn.Conv2d):
            return layer
    return None


def _patch_second_moment(images: torch.Tensor, kh: int, kw: int, dtype: torch.dtype) -> torch.Tensor:
    """E[p p^T] over all kh x kw patches (stride 1, no padding), flattened in (c, h, w) order.

    Accumulated chunk by chunk in ``dtype`` so memory stays bounded and the sum stays precise.
    """
    c = images.shape[1]
    d = c * kh * kw
    total = torch.zeros(d, d, dtype=dtype, device=images.device)
    count = 0
    for start in range(0, images.shape[0], _CHUNK):
        x = images[start : start + _CHUNK].to(dtype)
        # (n, c, H', W', kh, kw) -> (n*H'*W', c*kh*kw), matching conv weight layout (c, kh, kw)
        p = x.unfold(2, kh, 1).unfold(3, kw, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        total += p.T @ p
        count += p.shape[0]
    return total / count


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = EPS) -> None:
    """Set ``conv`` to whiten the kxk patches of ``images`` (normalized float, (N, C, H, W)).

    airbench uses 5,000 training images and eps=5e-4; eps keeps near-zero-variance directions
    from being amplified into noise. Weights get filters ordered by decreasing eigenvalue, the
    positive copies first and the negated copies second; the bias (if any) is zeroed. Works in
    float64 on the images' device (CPU for MPS, which has no float64) and writes the result in
    the conv's own dtype and device.
    """
    c_in = conv.in_channels
    kh, kw = conv.kernel_size
    d = c_in * kh * kw
    if conv.groups != 1 or conv.out_channels != 2 * d:
        raise ConfigError(
            f"the whitening conv has {conv.out_channels} output channels (groups={conv.groups}); "
            f"patch whitening needs groups=1 and 2*{c_in}*{kh}*{kw}={2 * d} (one +/- pair per patch dimension)"
        )
    if images.ndim != 4 or images.shape[1] != c_in or images.shape[2] < kh or images.shape[3] < kw:
        raise DataError(
            f"whitening init got images of shape {tuple(images.shape)}; it needs (N, {c_in}, H, W) "
            f"with H >= {kh} and W >= {kw}"
        )
    if images.shape[0] == 0 or not images.is_floating_point():
        raise DataError(
            f"whitening init needs a non-empty float tensor of normalized images, got "
            f"{images.shape[0]} images of dtype {images.dtype}"
        )
    if not torch.isfinite(images).all():
        raise DataError("whitening init got images containing NaN or Inf; check the data normalization")

    work = images if images.device.type != "mps" else images.cpu()
    cov = _patch_second_moment(work, kh, kw, torch.float64)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending; columns are eigenvectors
    eigenvalues = eigenvalues.flip(0).clamp_min(0.0)  # round-off can make tiny ones negative
    eigenvectors = eigenvectors.flip(1)
    filters = (eigenvectors / torch.sqrt(eigenvalues + eps)).T.reshape(d, c_in, kh, kw)
    weight = torch.cat((filters, -filters))
    conv.weight.copy_(weight.to(device=conv.weight.device, dtype=conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.zero_()


class WhiteningInit(pl.Callback):
    """At the start of a fresh fit (not a resumed one, whose weights come from its checkpoint):
    set the net's whitening layer, if it has one, from airbench's 5000 training images, drawn
    from every class alike (``datamodule.train_sample``), on the training clock (airbench
    counts the init as training time)."""

    def __init__(self, eps: float = EPS) -> None:
        validate_module_options({"whitening_eps": eps})
        self.eps = eps

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layer = find_whitening_layer(getattr(pl_module, "net", pl_module))
        datamodule = getattr(trainer, "datamodule", None)
        if layer is None or datamodule is None or trainer.ckpt_path is not None:
            return
        timer = training_timer(getattr(trainer, "callbacks", ()))
        if timer is not None:
            timer.clock.start()
        init_whitening(layer, datamodule.train_sample(5000, device=layer.weight.device), eps=self.eps)
        if timer is not None:
            timer.clock.stop()


class FreezeWhiteningBias(FreezeParameters):
    """airbench: the whitening layer's bias learns the data's offset for the first
    ``after_epochs`` epochs (airbench: 3), then is frozen (see FreezeParameters). On one device
    backward then skips the first conv's input gradient at full resolution (~5% of a CPU step)."""

    def __init__(self, after_epochs: int) -> None:
        validate_module_options({"whiten_bias_epochs": after_epochs})
        super().__init__(from_epoch=after_epochs)

    def select(self, trainer: pl.Trainer, net: nn.Module) -> list[nn.Parameter]:
        layer = find_whitening_layer(net)
        return [layer.bias] if layer is not None and layer.bias is not None else []
