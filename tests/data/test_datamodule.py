"""The DataModule's sample for data-driven inits (whitening): every class, whatever the order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.split import stratified_sample


class _ClassSortedSource:
    """Like the folder source: images stored one class after another (class k has pixel value k)."""

    def __init__(self, per_class: int = 600) -> None:
        labels = np.repeat(np.arange(10), per_class)
        images = np.broadcast_to(labels[:, None, None, None].astype(np.uint8), (len(labels), 8, 8, 3)).copy()
        self.arrays = ImageArrays(images, labels, images[:20], labels[:20], tuple(f"c{k}" for k in range(10)))

    def prepare(self) -> None:
        pass

    def load(self) -> ImageArrays:
        return self.arrays


def _datamodule(seed: int = 0, val_size: int = 500) -> CIFARDataModule:
    dm = CIFARDataModule(
        _ClassSortedSource(), val_size=val_size, batch_size=16, mean=[0, 0, 0], std=[1, 1, 1], seed=seed
    )
    dm.setup("fit")
    return dm


def _classes_of(images: torch.Tensor) -> np.ndarray:
    return np.rint(images[:, 0, 0, 0].numpy() * 255).astype(int)  # pixel value = class (mean 0, std 1)


def test_init_sample_of_a_class_sorted_source_has_every_class_at_its_share():
    counts = np.bincount(_classes_of(_datamodule().train_sample(1000)), minlength=10)
    assert counts.tolist() == [100] * 10  # "the first 1000" would be 1000 of class 0


def test_init_sample_is_seeded_by_data_seed():
    def sample(seed: int) -> np.ndarray:
        dm = _datamodule(seed=seed, val_size=0)
        dm._splits["train"][0][:] = (
            np.arange(len(dm._splits["train"][0]))[:, None, None, None] % 251
        )  # tell images apart
        return dm.train_sample(300).numpy()

    assert np.array_equal(sample(0), sample(0)) and not np.array_equal(sample(0), sample(1))


def test_stratified_sample_takes_everything_when_asked_for_more():
    labels = np.repeat(np.arange(3), 4)
    assert stratified_sample(labels, 12, 0).tolist() == list(range(12))
    assert np.bincount(labels[stratified_sample(labels, 6, 0)]).tolist() == [2, 2, 2]


def test_whitening_init_sees_every_class(monkeypatch):
    """The whitening init takes its 5000 images from the DataModule's balanced sample."""
    import cifar_lab.recipes.whitening as whitening
    from cifar_lab.models import FastNet
    from cifar_lab.training.module import ImageClassifier

    seen = []
    monkeypatch.setattr(whitening, "init_whitening", lambda layer, images, eps: seen.append(images))
    dm = _datamodule()
    module = ImageClassifier(FastNet(num_classes=10, widths=[8, 8, 8]), optimizer=torch.optim.SGD, num_classes=10)
    trainer = SimpleNamespace(datamodule=dm, ckpt_path=None)  # a fresh fit
    whitening.WhiteningInit().on_fit_start(trainer, module)
    counts = np.bincount(_classes_of(seen[0]), minlength=10)
    assert len(seen[0]) == 5000 and counts.min() == counts.max() == 500


def test_each_ddp_rank_scores_its_share_of_validation_and_test(monkeypatch):
    """Under DDP the eval loaders shard the split: together the ranks score every image once."""
    import pytest

    from cifar_lab.errors import ConfigError

    dm = _datamodule(val_size=500)
    dm.setup("test")
    shares = {"val": [], "test": []}
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    for rank in range(3):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=3, strategy=cpu)
        for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
            shares[split].append(torch.cat([labels for _, labels in loader]))
    for split, expected in (("val", dm._on_device("val")[1]), ("test", dm._on_device("test")[1])):
        sizes = [len(share) for share in shares[split]]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(expected)
        assert torch.equal(torch.cat(shares[split]).sort().values, expected.sort().values)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=501, strategy=cpu)
    with pytest.raises(ConfigError, match="data.val_size has 500 images, fewer than the 501 devices"):
        dm.val_dataloader()


def test_channel_stats_equal_the_float64_ones_without_a_float_copy_of_the_split():
    """The normalization statistics come from per-channel histograms: the float64 mean and std of
    the whole split to float32 precision, while allocating a fraction of one float copy."""
    import tracemalloc

    from cifar_lab.data.datamodule import channel_stats

    images = np.random.default_rng(0).integers(0, 256, size=(3001, 32, 32, 3), dtype=np.uint8)
    images[:, :, :, 2] //= 3  # channels that differ
    pixels = torch.from_numpy(images).reshape(-1, 3).double() / 255.0
    tracemalloc.start()
    mean, std = channel_stats(images, chunk=128)  # memory by the chunk (~38 MB at the default 1024), not the split
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert torch.equal(torch.as_tensor(mean, dtype=torch.float32), pixels.mean(0).float())
    assert torch.equal(torch.as_tensor(std, dtype=torch.float32), pixels.std(0).float())
    assert peak < pixels.numel() * 8 / 5  # a float64 copy is numel * 8 bytes
