"""The official CIFAR-10 / CIFAR-100 through torchvision."""

from __future__ import annotations

import numpy as np

from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.sources.layout import LAYOUT_HINT
from cifar_lab.errors import ConfigError, DataError, one_line

# data.source.dataset -> (torchvision.datasets class, name in messages). CIFAR-100 reads its fine
# labels (100 classes, names from the dataset's meta file): torchvision's CIFAR100 default.
_TORCHVISION_DATASETS = {"cifar10": ("CIFAR10", "CIFAR-10"), "cifar100": ("CIFAR100", "CIFAR-100")}


class TorchvisionCIFAR:
    """The official CIFAR-10 or CIFAR-100 (python pickles), downloaded and md5-checked by torchvision.

    Their files are already raw uint8 arrays, so it needs no cache of its own.
    """

    def __init__(self, root: str = "data", download: bool = True, dataset: str = "cifar10") -> None:
        if dataset not in _TORCHVISION_DATASETS:
            raise ConfigError(f"data.source.dataset={dataset!r} must be one of: {', '.join(_TORCHVISION_DATASETS)}")
        self.root = root
        self.download = download
        self.dataset = dataset
        self.name = _TORCHVISION_DATASETS[dataset][1]

    def prepare(self) -> None:
        """Download (if allowed and absent) and verify both splits."""
        for train in (True, False):
            self._dataset(train, download=self.download)

    def load(self) -> ImageArrays:
        """Read both splits from ``root``, downloading them first if needed and allowed."""
        try:
            train = self._dataset(True, download=False)
        except DataError:
            if not self.download:
                raise
            self.prepare()
            train = self._dataset(True, download=False)
        test = self._dataset(False, download=False)
        return ImageArrays(
            train_images=np.ascontiguousarray(train.data, dtype=np.uint8),
            train_labels=np.asarray(train.targets, dtype=np.int64),
            test_images=np.ascontiguousarray(test.data, dtype=np.uint8),
            test_labels=np.asarray(test.targets, dtype=np.int64),
            classes=tuple(str(c) for c in train.classes),
        )

    def _dataset(self, train: bool, download: bool):  # -> torchvision.datasets.CIFAR10 / CIFAR100
        import torchvision.datasets  # heavy import, only when this source is used

        dataset_class = getattr(torchvision.datasets, _TORCHVISION_DATASETS[self.dataset][0])
        try:
            return dataset_class(self.root, train=train, download=download)
        except (OSError, RuntimeError) as exc:  # URLError, timeouts, md5 mismatch, absent
            raise self._error(exc, download) from exc

    def _error(self, exc: BaseException, download: bool) -> DataError:
        offline = f"without network, use a local copy: data=folder data.path=PATH ({LAYOUT_HINT})"
        if download:
            reason = one_line(getattr(exc, "reason", None) or exc)
            return DataError(f"could not download {self.name} into '{self.root}' ({reason}); {offline}")
        return DataError(
            f"{self.name} is not in '{self.root}' (or is corrupt) and download is off; "
            f"set data.source.download=true, or {offline}"
        )


class TorchvisionCIFAR10(TorchvisionCIFAR):
    """CIFAR-10 under its earlier name, for code and configs written before CIFAR-100 was offered."""

    def __init__(self, root: str = "data", download: bool = True) -> None:
        super().__init__(root, download, dataset="cifar10")
