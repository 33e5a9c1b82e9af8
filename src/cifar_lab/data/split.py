"""The train/validation split: stratified and seeded, so every class keeps its share."""

from __future__ import annotations

import numpy as np

from cifar_lab.errors import ConfigError


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_indices, val_indices), both sorted, holding out ``val_size`` labels.

    Each class gives ``val_size * its_share`` images (largest-remainder rounding, so the
    total is exact); the pick inside a class is a seeded permutation.
    """
    n = len(labels)
    if not 0 <= val_size < n:
        raise ConfigError(
            f"data.val_size={val_size} must be between 0 and {n - 1} "
            f"(the training split has {n} images); lower data.val_size"
        )
    if val_size == 0:
        return np.arange(n), np.arange(0)
    val_idx = stratified_sample(labels, val_size, seed)
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` sorted indices with each class at its share of ``labels``, seeded.

    Whatever order the source stores images in (the folder source stores them class by
    class, so "the first N" would be one class): largest-remainder quotas make the total
    exact, and the pick inside a class is a seeded permutation. ``count`` >= len(labels)
    takes every index.
    """
    n = len(labels)
    if count >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (count / n)
    quota = np.floor(exact).astype(np.int64)
    short = count - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, quota)]
    return np.sort(np.concatenate(parts))
