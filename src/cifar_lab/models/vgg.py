"""VGG-16 with BatchNorm, CIFAR variant (one 512->K classifier instead of the 4096-wide MLP)."""

from __future__ import annotations

import torch
from torch import nn

from cifar_lab.models._checks import check_float, check_int, check_num_classes

# Channel counts of the 13 conv layers; "M" is a 2x2 max-pool. Five pools take 32x32 to 1x1.
VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16(nn.Module):
    """VGG-16-BN: 13 x (3x3 conv -> BN -> ReLU) with 5 max-pools, then Linear(512, K).

    After five pools a 32x32 input is 1x1x512, so the ImageNet classifier (two 4096-wide
    layers, ~120M params) is replaced by a single linear layer, as in the common CIFAR
    reference code; 14,728,266 parameters at 10 classes. ``dropout`` (default 0: BN already
    regularises) is applied before that layer. PyTorch's default init. ``width`` is the first
    stage's channels (64 in VGG-16; every layer scales with it, as ResNet18's ``width``), for
    runs at a reduced width.
    """

    def __init__(self, num_classes: int, *, width: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        k = check_num_classes(num_classes, "VGG16")
        w = check_int(width, "width", "VGG16", minimum=1)
        p = check_float(dropout, "dropout", "VGG16", 0.0, 1.0, high_open=True)
        self.num_classes = k
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(v, int)
                out_ch = v * w // 64
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(in_ch, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.flatten(self.features(x))))
