"""The data group's rules: batch sizes, the validation split, augmentation, progressive crops,
normalization, the source; the one home of each, called by the config check and by the
constructor that receives the value (CIFARDataModule, AugmentSpec, apply_policy)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from cifar_lab.config.run import check_seed, training_epochs
from cifar_lab.config.values import ABSENT, Rule, check_given, get, is_int, is_number, one_of, plain, present, require
from cifar_lab.errors import ConfigError

# horizontal-flip modes of the data loader (cifar_lab.data.augment uses these)
FLIP_MODES = ("none", "random", "alternating")
TRANSLATE_PADDINGS = ("reflect", "zeros")
CUTOUT_MODES = ("inside", "clipped")
# per-image augmentation policies (cifar_lab.data.policy)
POLICIES = ("none", "trivialaugment", "randaugment")
# the augmentation keys of data.* (AugmentSpec's fields of the same names)
AUGMENT_OPTIONS = (
    "flip",
    "translate",
    "translate_padding",
    "cutout",
    "cutout_mode",
    "policy",
    "policy_ops",
    "policy_magnitude",
)
# training-set sizes of sources whose size is known without reading them
_KNOWN_TRAIN_SIZE: dict[str, Callable[[DictConfig], int | None]] = {
    "cifar_lab.data.sources.TorchvisionCIFAR": lambda src: 50_000,  # CIFAR-10 and CIFAR-100 alike
    "cifar_lab.data.sources.TorchvisionCIFAR10": lambda src: 50_000,
    "cifar_lab.data.sources.SyntheticSource": lambda src: _positive_product(
        src.get("num_classes"), src.get("train_per_class")
    ),
}


# each data.* value's rule, in the order they are checked (crops: crop_stages; the rest: the source's)
RULES: dict[str, Rule] = {
    "batch_size": (lambda v: is_int(v) and v > 0, "must be a positive integer"),
    "eval_batch_size": (lambda v: is_int(v) and v > 0, "must be a positive integer"),
    "val_size": (lambda v: is_int(v) and v >= 0, "must be a whole number >= 0 (0 turns validation off)"),
    "translate": (lambda v: is_int(v) and v >= 0, "must be a whole number of pixels >= 0"),
    "cutout": (lambda v: is_int(v) and v >= 0, "must be a whole number of pixels >= 0"),
    "flip": one_of(FLIP_MODES),
    "translate_padding": one_of(TRANSLATE_PADDINGS),
    "cutout_mode": one_of(CUTOUT_MODES),
    "policy": one_of(POLICIES),
    "policy_ops": (lambda v: is_int(v) and v >= 1, "must be a whole number >= 1 (RandAugment: 2)"),
    "policy_magnitude": (lambda v: is_int(v) and 0 <= v <= 30, "must be a whole number from 0 to 30 (RandAugment: 9)"),
}


def validate_data_options(options: dict[str, Any]) -> None:
    """The data.* values both the config check and their constructors (CIFARDataModule,
    AugmentSpec) rely on: the one home of these rules; a key not given is not checked."""
    check_given(options, "data", RULES)


def crop_stages(crop: Any, crop_epochs: Any) -> tuple[tuple[int, int], ...]:
    """Progressive size as (crop size, epochs) stages, in training order.

    ``crop`` and ``crop_epochs`` are one whole number each (``28``, ``9``: 9 epochs on 28x28
    windows) or lists of equal length (``[24, 28]``, ``[6, 4]``: 6 epochs at 24, then 4 at
    28); full-size images follow. Shared by the config check and the data loader, so both
    accept and refuse the same values.
    """

    def whole_numbers(value: Any, key: str, unit: str) -> list[Any]:
        is_list = isinstance(value, (list, tuple, ListConfig))
        values = list(value) if is_list else [value]
        require(
            len(values) > 0 and all(is_int(v) and v >= 0 for v in values),
            f"{key}={values if is_list else value!r} must be a whole number of {unit} >= 0, or a list of them",
        )
        return values

    sizes = whole_numbers(crop, "data.crop", "pixels")
    epochs = whole_numbers(crop_epochs, "data.crop_epochs", "epochs")
    require(
        len(sizes) == len(epochs),
        f"data.crop has {len(sizes)} size(s) but data.crop_epochs has {len(epochs)} epoch count(s): "
        "give one count per size, e.g. data.crop=[24,28] data.crop_epochs=[6,4]",
    )
    for size, count in zip(sizes, epochs):
        require(
            count == 0 or size > 0,
            f"data.crop_epochs={count} needs a crop size: set data.crop (e.g. 28), or crop_epochs=0",
        )
    return tuple(zip(sizes, epochs))


def validate_data_config(cfg: DictConfig) -> None:
    """The data group's checks alone (eval composes data without a training setup), with the seeds."""
    check_seed(cfg, "seed")  # first: data.seed is ${seed} unless typed
    check_seed(cfg, "data.seed")
    # every key is optional: configs saved before a key existed lack it, and its default applies
    options = present(cfg, "data", tuple(RULES))
    validate_data_options(options)
    _check_normalization(cfg)
    _check_crops(cfg)
    _check_source(cfg, options.get("val_size", ABSENT))


def _check_normalization(cfg: DictConfig) -> None:
    for key in ("data.mean", "data.std"):
        value = get(cfg, key, None)
        require(
            value is None or (isinstance(value, ListConfig) and len(value) == 3 and all(is_number(v) for v in value)),
            f"{key}={plain(value)!r} must be 3 numbers, one per RGB channel (e.g. [0.5,0.5,0.5]), or null for the training split's",
        )
        if key == "data.std" and value is not None:
            require(all(v > 0 for v in value), f"data.std={plain(value)!r} must be > 0 in every channel")


def _check_crops(cfg: DictConfig) -> None:
    crop, crop_epochs = get(cfg, "data.crop", ABSENT), get(cfg, "data.crop_epochs", ABSENT)
    if crop is ABSENT and crop_epochs is ABSENT:
        return  # a config saved before progressive size existed: no crops
    stages = crop_stages(0 if crop is ABSENT else crop, 0 if crop_epochs is ABSENT else crop_epochs)
    side = _image_side(get(cfg, "data.source", None))
    cropped = sum(count for size, count in stages if 0 < size < side)  # a crop of the whole image is full size
    total = training_epochs(cfg)
    require(
        not cropped or total is None or cropped < total,
        f"data.crop_epochs={plain(crop_epochs)} covers all {total} training epochs: none would train "
        f"on full-size images, which the BatchNorm statistics and the test pass see; use fewer crop epochs, or data.crop=0",
    )


def _check_source(cfg: DictConfig, val_size: Any) -> None:
    source = get(cfg, "data.source")
    target = source.get("_target_") if isinstance(source, DictConfig) else None
    require(
        target is not None,
        "data.source needs a _target_ (pick data=cifar10, data=cifar100, data=folder or data=synthetic)",
    )
    if target.endswith("ImageFolderSource"):
        try:
            path = get(cfg, "data.source.path")
        except ConfigError:
            raise ConfigError(
                "data=folder needs a path: add data.path=PATH (a folder or .tar/.tar.gz/.zip with train/<class>/ and test/<class>/)"
            ) from None
        require(
            Path(str(path)).expanduser().exists(),
            f"data.path={path!r} does not exist: point it at a folder or archive of train/ and test/ images",
        )
    if target in _KNOWN_TRAIN_SIZE and val_size is not ABSENT:
        n_train = _KNOWN_TRAIN_SIZE[target](source)
        if n_train is not None:  # None: the source's own constructor refuses its size, naming the key
            require(
                val_size < n_train,
                f"data.val_size={val_size} is too large: the training split has {n_train} images; use at most {n_train - 1}",
            )


def _image_side(source: Any) -> int:
    """The side of the source's images: 32 (CIFAR; folders are resized to it) unless it says."""
    side = source.get("image_size", 32) if isinstance(source, DictConfig) else 32
    return side if is_int(side) else 32


def _positive_product(*values: Any) -> int | None:
    """The product of positive whole numbers; None when one is not (its constructor says which)."""
    if not all(is_int(v) and v > 0 for v in values):
        return None
    return math.prod(values)
