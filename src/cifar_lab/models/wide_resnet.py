"""Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation blocks, CIFAR layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.errors import ConfigError
from cifar_lab.models._checks import check_float, check_int, check_num_classes


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus a shortcut.

    Pre-activation: the residual path starts with BN-ReLU, so the identity path stays clean.
    When the shape changes, the 1x1 projection takes the *pre-activated* input, as in the
    authors' code.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.dropout(F.relu(self.bn2(y))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-width; the default WRN-16-8 has 10,961,370 parameters at 10 classes.

    Three stages of n = (depth-4)/6 blocks at widths 16*width, 32*width, 64*width (stride 1,
    2, 2), after a 16-channel 3x3 stem; final BN-ReLU, global average pool, linear. He-normal
    (fan_out) conv init and zero linear bias, as in the authors' code. ``dropout`` sits between
    the two convs of each block (the paper uses 0.3 for long schedules; 0 here).
    """

    def __init__(self, num_classes: int, *, depth: int = 16, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        name = "WideResNet"
        k = check_num_classes(num_classes, name)
        d = check_int(depth, "depth", name, minimum=1)
        if d < 10 or (d - 4) % 6 != 0:
            raise ConfigError(
                f"model.depth={depth} is invalid for WideResNet: depth must be 6n+4 (e.g. 16, 22, 28, 40)"
            )
        w = check_int(width, "width", name, minimum=1)
        p = check_float(dropout, "dropout", name, 0.0, 1.0, high_open=True)
        self.num_classes, self.depth, self.width = k, d, w
        n = (d - 4) // 6
        widths = (16, 16 * w, 32 * w, 64 * w)
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [WideBasic(in_planes, planes, stride, p)]
            blocks += [WideBasic(planes, planes, 1, p) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], k)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(self.pool(out), 1))
