"""The seed document's CNN, kept verbatim as the project's baseline."""

from __future__ import annotations

from torch import nn

from cifar_lab.models._checks import check_num_classes


class SeedCNN(nn.Sequential):
    """Conv(3,64)-ReLU-Pool-Conv(64,128)-ReLU-Pool-Flatten-FC(8192,1024)-ReLU-FC(1024,K).

    A subclass of ``nn.Sequential`` with the seed's layers in the seed's order and PyTorch's
    default init, so results stay comparable with the seed and its state_dict keys ("0.weight",
    ...) match a plain ``nn.Sequential`` of the same layers. At K=10 it has 8,475,530 parameters,
    almost all (8.39M) in the first fully connected layer.
    """

    def __init__(self, num_classes: int) -> None:
        k = check_num_classes(num_classes, "SeedCNN")
        super().__init__(
            nn.Conv2d(3, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(128 * 8 * 8, 1024),
            nn.ReLU(),
            nn.Linear(1024, k),
        )
        self.num_classes = k
