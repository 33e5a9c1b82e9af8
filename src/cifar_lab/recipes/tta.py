"""Test-time augmentation: average the logits of a few views of each image (airbench's levels)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cifar_lab.config.module import TTA_LEVELS  # noqa: F401  (the levels below; checked in config.module)


def _mirror(net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    return 0.5 * net(images) + 0.5 * net(images.flip(-1))


def tta_logits(net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, level: int) -> torch.Tensor:
    """0: one view; 1: + mirror (2 views); 2: + 1-pixel diagonal shifts, mirrored (6 views)."""
    if level == 0:
        return net(images)
    if level == 1:
        return _mirror(net, images)
    if level == 2:
        h, w = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., 0:h, 0:w], padded[..., 2 : h + 2, 2 : w + 2]]
        translated = torch.stack([_mirror(net, view) for view in shifted]).mean(0)
        return 0.5 * _mirror(net, images) + 0.5 * translated
    raise ValueError(f"tta_level={level} is not one of {TTA_LEVELS}")
