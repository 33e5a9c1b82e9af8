"""The seed document's training loop, as written (../shared/seed/), for side-by-side timing.

Only the dataset object differs: the seed downloads torchvision's CIFAR10, which this
machine cannot; ``ArrayCIFAR10`` serves the same decoded images through the same
``Image.fromarray -> transform`` path that ``torchvision.datasets.CIFAR10.__getitem__`` uses.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from PIL import Image
from torchvision import transforms
from torchvision.datasets import VisionDataset


class ArrayCIFAR10(VisionDataset):
    """torchvision.datasets.CIFAR10's __getitem__ over in-memory (N, 32, 32, 3) uint8 arrays."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform=None) -> None:
        super().__init__(root="", transform=transform)
        self.data, self.targets = data, [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def seed_network() -> nn.Sequential:
    """The seed document's network, as written (SeedCNN must match it: tests/models/test_models.py)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(128 * 8 * 8, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )


def run_seed_loop(arrays, epochs: int = 10, device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Train and test exactly as the seed document does; returns accuracy and timings."""
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = ArrayCIFAR10(arrays.train_images, arrays.train_labels, transform=transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=32, shuffle=True)
    testset = ArrayCIFAR10(arrays.test_images, arrays.test_labels, transform=transform)
    testloader = torch.utils.data.DataLoader(testset, batch_size=32, shuffle=False)

    model = seed_network().to(device)
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()

    start = time.perf_counter()
    for _epoch in range(epochs):
        for inputs, labels in trainloader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            images, labels = images.to(device), labels.to(device)
            predicted = model(images).argmax(1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    elapsed = time.perf_counter() - start
    return {"test/acc": correct / total, "train_time_s": elapsed}
