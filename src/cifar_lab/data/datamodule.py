"""The LightningDataModule: a source's decoded arrays, split and served from device memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from cifar_lab.config.data import validate_data_options
from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.loader import AugmentSpec, DeviceLoader, normalize
from cifar_lab.data.split import stratified_sample, stratified_split
from cifar_lab.errors import ConfigError


class CIFARDataModule(pl.LightningDataModule):
    """CIFAR-style data (32x32 RGB, N classes) kept as tensors on the training device.

    ``prepare_data`` only fetches (download or decode into the cache); ``setup`` only
    splits. The official test split is never touched by the split: validation comes out
    of train.
    """

    def __init__(
        self,
        source: Any,
        val_size: int = 5000,
        batch_size: int = 512,
        eval_batch_size: int = 1024,
        flip: str = "random",
        translate: int = 2,
        translate_padding: str = "reflect",
        cutout: int = 0,
        cutout_mode: str = "inside",
        policy: str = "none",
        policy_ops: int = 2,
        policy_magnitude: int = 9,
        crop: int | Sequence[int] = 0,
        crop_epochs: int | Sequence[int] = 0,
        drop_last: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        validate_data_options(dict(batch_size=batch_size, eval_batch_size=eval_batch_size, val_size=val_size))
        self.source = source
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment_spec = AugmentSpec(
            flip=flip,
            translate=translate,
            translate_padding=translate_padding,
            cutout=cutout,
            cutout_mode=cutout_mode,
            policy=policy,
            policy_ops=policy_ops,
            policy_magnitude=policy_magnitude,
            crop=crop,
            crop_epochs=crop_epochs,
        )
        self.drop_last = drop_last
        self.seed = seed
        self._fixed_stats = (mean, std)
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._device_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.classes: tuple[str, ...] = ()
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    # -- Lightning hooks -------------------------------------------------------------
    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        arrays: ImageArrays = self.source.load()
        train_idx, val_idx = stratified_split(arrays.train_labels, self.val_size, self.seed)
        self._splits = {
            "train": (arrays.train_images[train_idx], arrays.train_labels[train_idx]),
            "val": (arrays.train_images[val_idx], arrays.train_labels[val_idx]),
            "test": (arrays.test_images, arrays.test_labels),
        }
        self.classes = tuple(arrays.classes)
        self.augment_spec.crop_sizes(self.image_size)  # a crop too large fails here, not mid-fit
        self.mean, self.std = self._channel_stats(self._splits["train"][0])

    def train_dataloader(self) -> DeviceLoader:
        images, labels = self._on_device("train")
        # Lightning's overfit_batches only unshuffles loaders with a sampler: without this,
        # debug=overfit would see 3 new batches every epoch instead of the same 3 (shuffled
        # once: in stored order they would all be one class)
        overfitting = self.trainer is not None and bool(self.trainer.overfit_batches)
        return DeviceLoader(
            images,
            labels,
            self.batch_size,
            shuffle=True,
            reshuffle=not overfitting,
            drop_last=self.drop_last,
            augment_spec=self.augment_spec,
            seed=self.seed,
            epoch_fn=self._current_epoch if self.trainer is not None else None,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=self.trainer.world_size if self.trainer else 1,
            normalization=(self.mean, self.std),
        )

    def val_dataloader(self) -> DeviceLoader | list:
        if self.val_size == 0:
            return []
        return self._eval_loader("val")

    def test_dataloader(self) -> DeviceLoader:
        return self._eval_loader("test")

    # -- public helpers --------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self._require_setup()
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Side of the (square) images, in pixels."""
        self._require_setup()
        return int(self._splits["train"][0].shape[1])

    @property
    def num_train(self) -> int:
        self._require_setup()
        return len(self._splits["train"][1])

    @property
    def split_sizes(self) -> dict[str, int]:
        """Images in each split: train (after the validation hold-out), val, test."""
        self._require_setup()
        return {split: len(labels) for split, (_, labels) in self._splits.items()}

    def train_sample(self, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``count`` normalized, unaugmented training images for a data-driven init.

        Class-balanced and seeded by ``data.seed`` whatever the source's stored order: the
        folder source stores one class after another, where "the first 5000" are airplanes.
        """
        self._require_setup()
        images, labels = self._splits["train"]
        images = images[stratified_sample(labels, count, self.seed)]
        return normalize(torch.from_numpy(images).to(device), self.mean.to(device), self.std.to(device))

    # -- internals -------------------------------------------------------------------
    def _require_setup(self) -> None:
        if self._splits is None:
            raise RuntimeError("call setup() first: the data is not loaded yet")

    def _channel_stats(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self._fixed_stats
        if mean is None or std is None:
            measured_mean, measured_std = channel_stats(images)
            mean = measured_mean if mean is None else mean
            std = measured_std if std is None else std
        return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def _device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_setup()
        device = self._device()
        cached = self._device_splits.get(split)
        if cached is None or cached[0].device != device:
            images, labels = self._splits[split]
            images_t = torch.from_numpy(images).to(device)
            cached = (
                normalize(images_t, self.mean.to(device), self.std.to(device)),
                torch.from_numpy(labels).long().to(device),
            )
            self._device_splits[split] = cached
        return cached

    def _eval_loader(self, split: str) -> DeviceLoader:
        """Under DDP each rank scores its own shard and the metrics sync (torchmetrics): every
        image counts once, and evaluation runs world_size times faster."""
        images, labels = self._on_device(split)
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if len(images) < world_size:
            key = "data.val_size" if split == "val" else f"the {split} split"
            raise ConfigError(
                f"{key} has {len(images)} images, fewer than the {world_size} devices that each score a share "
                f"of it; use at least {world_size} (or fewer devices)"
            )
        return DeviceLoader(images, labels, self.eval_batch_size, rank=rank, world_size=world_size, every_sample=True)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) std of uint8 (N, H, W, C) images scaled to [0, 1].

    From a 256-bin histogram per channel, counted ``chunk`` images at a time: exact float64
    sums over integer counts, with no float copy of the split (a float64 copy of the 45k training
    images and its scaled twin took ~2.1 GB of host memory on every rank of every run).
    """
    channels = images.shape[-1]
    offsets = np.arange(channels, dtype=np.int32) * 256  # channel c counts in bins [256c, 256c + 256)
    counts = np.zeros(channels * 256, dtype=np.int64)
    for start in range(0, len(images), chunk):
        pixels = images[start : start + chunk].reshape(-1, channels).astype(np.int32) + offsets
        counts += np.bincount(pixels.ravel(), minlength=channels * 256)
    counts = counts.reshape(channels, 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(1)
    mean = counts @ values / n
    var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(1) / (n - 1)
    return mean, np.sqrt(var)
