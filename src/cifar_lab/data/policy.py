"""Per-image augmentation policies (TrivialAugment-Wide, RandAugment) for whole uint8 batches on their device.

torchvision's v2 ``TrivialAugmentWide`` and ``RandAugment`` draw one op and one magnitude per call, so a
batched tensor gets the same op on every image (https://github.com/pytorch/vision/issues/8484). Our loader
keeps the whole training split as one tensor and augments it once per epoch, so here each image draws its
own op, magnitude bin and sign, all from one given ``torch.Generator`` (never the global RNG).

The op tables copy torchvision's ``_AUGMENTATION_SPACE`` (op set, magnitude ranges, signedness) and the ops
are torchvision's own functionals, called as ``_apply_image_or_video_transform`` calls them (nearest
interpolation, ``fill=None``: zeros outside the image). Images sharing a draw (op, bin, sign) are one group,
found with ``torch.unique`` over a combined key, and each group is one functional call on ``images[idx]``:
the cost is bounded by the number of groups (at most ops x 31 bins x 2 signs, ~620 for TrivialAugment-Wide),
not by the number of images, and each image equals torchvision's op applied to it alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from cifar_lab.config.data import POLICIES, validate_data_options

__all__ = ["POLICIES", "apply_policy"]

# torchvision's num_magnitude_bins (TrivialAugmentWide and RandAugment default)
NUM_BINS = 31

# (height, width) -> magnitudes of the 31 bins (None: the op takes no magnitude)
_Magnitudes = Callable[[int, int], torch.Tensor | None]


def _linspace(start: float, end: float) -> _Magnitudes:
    return lambda h, w: torch.linspace(start, end, NUM_BINS)


def _none(h: int, w: int) -> None:
    return None


def _posterize(span: int) -> _Magnitudes:
    return lambda h, w: (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / span))).round().int()


# name -> (magnitudes, signed), in torchvision's order (torchvision/transforms/v2/_auto_augment.py)
_TRIVIALAUGMENT_WIDE: dict[str, tuple[_Magnitudes, bool]] = {
    "Identity": (_none, False),
    "ShearX": (_linspace(0.0, 0.99), True),
    "ShearY": (_linspace(0.0, 0.99), True),
    "TranslateX": (_linspace(0.0, 32.0), True),
    "TranslateY": (_linspace(0.0, 32.0), True),
    "Rotate": (_linspace(0.0, 135.0), True),
    "Brightness": (_linspace(0.0, 0.99), True),
    "Color": (_linspace(0.0, 0.99), True),
    "Contrast": (_linspace(0.0, 0.99), True),
    "Sharpness": (_linspace(0.0, 0.99), True),
    "Posterize": (_posterize(6), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": (_none, False),
    "Equalize": (_none, False),
}
_RANDAUGMENT: dict[str, tuple[_Magnitudes, bool]] = {
    "Identity": (_none, False),
    "ShearX": (_linspace(0.0, 0.3), True),
    "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (lambda h, w: torch.linspace(0.0, 150.0 / 331.0 * w, NUM_BINS), True),
    "TranslateY": (lambda h, w: torch.linspace(0.0, 150.0 / 331.0 * h, NUM_BINS), True),
    "Rotate": (_linspace(0.0, 30.0), True),
    "Brightness": (_linspace(0.0, 0.9), True),
    "Color": (_linspace(0.0, 0.9), True),
    "Contrast": (_linspace(0.0, 0.9), True),
    "Sharpness": (_linspace(0.0, 0.9), True),
    "Posterize": (_posterize(4), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": (_none, False),
    "Equalize": (_none, False),
}
_SPACES = {"trivialaugment": _TRIVIALAUGMENT_WIDE, "randaugment": _RANDAUGMENT}
# ops without a magnitude (their bin is irrelevant: drawn, then set to 0 so they form one group)
_NO_MAGNITUDE = ("Identity", "AutoContrast", "Equalize")


class Draws(NamedTuple):
    """Per-image draws, each (rounds, N) on the generator's device: op index into the policy's table,
    magnitude bin (0..30) and whether the magnitude is negated (only ever true for a signed op at bin > 0)."""

    op: torch.Tensor
    bin: torch.Tensor
    negative: torch.Tensor


def _space(policy: str) -> dict[str, tuple[_Magnitudes, bool]]:
    return _SPACES[policy]  # a name apply_policy checked (validate_data_options)


def _draw(n: int, policy: str, generator: torch.Generator, *, num_ops: int = 2, magnitude: int = 9) -> Draws:
    """Each image's ops: one round for trivialaugment (a uniform bin), ``num_ops`` for randaugment (bin
    ``magnitude``). Draws that give the same pixels share one key: no-magnitude ops get bin 0, and only signed
    ops at a non-zero magnitude (bin > 0) keep a negative sign."""
    space = _space(policy)
    names = list(space)
    rounds = 1 if policy == "trivialaugment" else num_ops
    device = generator.device
    op = torch.randint(0, len(names), (rounds, n), generator=generator, device=device)
    if policy == "trivialaugment":
        bins = torch.randint(0, NUM_BINS, (rounds, n), generator=generator, device=device)
    else:
        bins = torch.full((rounds, n), magnitude, dtype=torch.long, device=device)
    negative = torch.rand((rounds, n), generator=generator, device=device) < 0.5
    takes_magnitude = torch.tensor([name not in _NO_MAGNITUDE for name in names], device=device)[op]
    signed = torch.tensor([space[name][1] for name in names], device=device)[op]
    bins = torch.where(takes_magnitude, bins, 0)
    negative = negative & signed & (bins > 0)
    return Draws(op, bins, negative)


def _magnitude(policy: str, op: int, bin: int, negative: bool, height: int, width: int) -> tuple[str, float]:
    """The op's name and signed magnitude, computed as torchvision does (float32 table, then a Python float)."""
    space = _space(policy)
    name = list(space)[op]
    magnitudes_fn, signed = space[name]
    magnitudes = magnitudes_fn(height, width)
    if magnitudes is None:
        return name, 0.0
    value = float(magnitudes[bin])
    return name, -value if signed and negative else value


def _apply_op(images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """torchvision's op ``name`` at ``magnitude`` on uint8 ``images`` (..., C, H, W), exactly as
    ``_AutoAugmentBase._apply_image_or_video_transform`` calls it (nearest, fill=None: zeros)."""
    nearest = InterpolationMode.NEAREST
    if name == "Identity":
        return images
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return F.affine(
            images,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=[shear, 0.0] if name == "ShearX" else [0.0, shear],
            interpolation=nearest,
            fill=None,
            center=[0, 0],
        )
    if name in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return F.affine(
            images, angle=0.0, translate=shift, scale=1.0, interpolation=nearest, shear=[0.0, 0.0], fill=None
        )
    if name == "Rotate":
        return F.rotate(images, angle=magnitude, interpolation=nearest, fill=None)
    if name == "Brightness":
        return F.adjust_brightness(images, brightness_factor=1.0 + magnitude)
    if name == "Color":
        return F.adjust_saturation(images, saturation_factor=1.0 + magnitude)
    if name == "Contrast":
        return F.adjust_contrast(images, contrast_factor=1.0 + magnitude)
    if name == "Sharpness":
        return F.adjust_sharpness(images, sharpness_factor=1.0 + magnitude)
    if name == "Posterize":
        return F.posterize(images, bits=int(magnitude))
    if name == "Solarize":
        return F.solarize(images, threshold=255.0 * magnitude)  # uint8's max, as torchvision's _max_value
    if name == "AutoContrast":
        return F.autocontrast(images)
    if name == "Equalize":
        return F.equalize(images)
    raise ValueError(f"no op named {name!r}")


def _apply_draw(images: torch.Tensor, policy: str, op: int, bin: int, negative: bool) -> torch.Tensor:
    """One draw (op index, bin, sign) of ``policy`` applied to all of ``images``."""
    name, magnitude = _magnitude(policy, op, bin, negative, *images.shape[-2:])
    return _apply_op(images, name, magnitude)


def apply_policy(
    images: torch.Tensor, policy: str, generator: torch.Generator, *, num_ops: int = 2, magnitude: int = 9
) -> torch.Tensor:
    """``policy`` applied to each uint8 image of ``images`` (N, C, H, W) with its own draws from ``generator``
    (on ``images.device``). ``num_ops`` and ``magnitude`` (bin of 31) are RandAugment's; "none" returns
    ``images`` itself. Returns a new uint8 tensor of the same shape on the same device."""
    validate_data_options({"policy": policy, "policy_ops": num_ops, "policy_magnitude": magnitude})
    if policy == "none":
        return images
    space = _space(policy)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"apply_policy needs uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    draws = _draw(len(images), policy, generator, num_ops=num_ops, magnitude=magnitude)
    identity = list(space).index("Identity")
    out = images.clone()
    for op, bins, negative in zip(*(t.to(images.device) for t in draws)):
        # one key per (op, bin, sign); images sorted by key, split into groups by the keys' counts
        key = (op * NUM_BINS + bins) * 2 + negative.long()
        keys, counts = torch.unique(key, sorted=True, return_counts=True)
        order = torch.argsort(key, stable=True)
        keys_list, counts_list = torch.stack([keys, counts]).tolist()  # the round's one host sync
        for k, idx in zip(keys_list, order.split(counts_list)):
            group_op, rest = divmod(k, NUM_BINS * 2)
            if group_op == identity:
                continue
            out[idx] = _apply_draw(out[idx], policy, group_op, *divmod(rest, 2))
    return out
