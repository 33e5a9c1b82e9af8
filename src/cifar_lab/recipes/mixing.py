"""MixUp and CutMix of training batches (torchvision v2's batch transforms).

Each batch is mixed with a shuffled copy of itself, and its labels become the matching soft
targets (probabilities over the classes), which ``nn.CrossEntropyLoss`` takes as they are.
With both switched on, each batch draws one of the two (``v2.RandomChoice``), as timm and
torchvision's reference scripts do. Draws come from torch's global generator, which a
checkpoint carries (runtime.checkpoints.state), so a resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class BatchMix:
    """``(images, labels) -> (mixed images, soft targets)``; built only when an alpha is > 0."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        mixes = []
        if mixup_alpha > 0:
            mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not mixes:
            raise ValueError("BatchMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.transform = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(images, labels)


def batch_mix(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> BatchMix | None:
    """The batch mix of these alphas, or None when both are 0 (no mixing, hard labels)."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return BatchMix(num_classes, mixup_alpha, cutmix_alpha)
