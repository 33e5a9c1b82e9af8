"""ResNet-18, CIFAR variant (He et al. 2016 blocks, the widely used kuangliu/pytorch-cifar layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.models._checks import check_int, check_num_classes


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a residual; a 1x1 conv+BN projection when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem and no max-pool.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8 before the
    first block; the CIFAR stem keeps full resolution, so the four stages run at 32/16/8/4.
    Stage widths are ``width * (1, 2, 4, 8)`` (64..512 by default); 11,173,962 parameters at
    the default width and 10 classes. PyTorch's default init, as in the common reference code.
    """

    def __init__(self, num_classes: int, *, width: int = 64) -> None:
        super().__init__()
        k = check_num_classes(num_classes, "ResNet18")
        w = check_int(width, "width", "ResNet18", minimum=1)
        self.num_classes = k
        self.conv1 = nn.Conv2d(3, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        stages: list[nn.Module] = []
        in_planes = w
        for i, planes in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(8 * w, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))
