"""The decoded dataset: the one format every source produces and the cache stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifar_lab.errors import DataError


@dataclass(frozen=True, eq=False)
class ImageArrays:
    """Decoded dataset: what every source produces and the cache stores.

    Validated on construction so that a bad source or cache fails here, with one clear line,
    rather than as a shape error deep inside a training step.
    """

    train_images: np.ndarray  # (N, H, W, 3) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, H, W, 3) uint8
    test_labels: np.ndarray  # (M,) int64
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_classes(self.classes)
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_images(split, images)
            _check_labels(split, labels, len(images), len(self.classes))
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"train images are {_hw(self.train_images)} but test images are "
                f"{_hw(self.test_images)}; both splits must have the same image size"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are in ``range(num_classes)``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        # The default repr would print every pixel.
        return (
            f"ImageArrays(train={len(self.train_images)}, test={len(self.test_images)}, "
            f"size={_hw(self.train_images)}, classes={list(self.classes)})"
        )


def _hw(images: np.ndarray) -> str:
    return "x".join(str(d) for d in images.shape[1:3])


def _check_classes(classes: tuple[str, ...]) -> None:
    if not isinstance(classes, tuple) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"classes must be a tuple of str, got {classes!r}")
    if not classes:
        raise DataError("the dataset has no classes; a classifier needs at least one")
    if len(set(classes)) != len(classes):
        raise DataError(f"class names must be unique, got {list(classes)}")


def _check_images(split: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{split}_images must be a uint8 numpy array, got {kind}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise DataError(f"{split}_images must have shape (N, H, W, 3), got {images.shape}")
    if len(images) == 0:
        raise DataError(f"the {split} split has no images")


def _check_labels(split: str, labels: np.ndarray, count: int, num_classes: int) -> None:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
        kind = getattr(labels, "dtype", type(labels).__name__)
        raise DataError(f"{split}_labels must be an int64 numpy array, got {kind}")
    if labels.shape != (count,):
        raise DataError(f"{split}_labels must have shape ({count},) to match {split}_images, got {labels.shape}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{split}_labels must be in [0, {num_classes}) for {num_classes} classes, found values in [{low}, {high}]"
        )
