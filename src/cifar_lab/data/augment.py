"""Augmentations of whole image batches (N, C, H, W) on their own device.

Each op draws all its randomness from one generator in a few tensor calls, so an epoch of
augmentation is a handful of kernels, never a Python loop over images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flip_mask(n: int, generator: torch.Generator) -> torch.Tensor:
    """Which images to mirror: each with probability 1/2."""
    return torch.rand(n, generator=generator, device=generator.device) < 0.5


def flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``mask`` is true (left-right)."""
    mask = mask.to(images.device).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def translate(
    images: torch.Tensor, max_shift: int, generator: torch.Generator, padding: str = "reflect"
) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y.

    ``padding``: "reflect" (airbench) or "zeros" (the papers' RandomCrop(32, padding=4); zero
    is the mean after normalization). Crops are grouped by offset, so the cost is
    2 * (2 * max_shift + 1) slicing ops for the whole batch, whatever its size.
    """
    if max_shift <= 0:
        return images
    n, c, h, w = images.shape
    r = max_shift
    padded = F.pad(images, (r, r, r, r), mode="reflect" if padding == "reflect" else "constant")
    offsets = torch.randint(0, 2 * r + 1, (2, n), generator=generator, device=generator.device)
    offsets = offsets.to(images.device)
    rows = torch.empty((n, c, h, w + 2 * r), dtype=images.dtype, device=images.device)
    for dy in range(2 * r + 1):
        idx = (offsets[0] == dy).nonzero().squeeze(1)
        rows[idx] = padded[idx, :, dy : dy + h, :]
    out = torch.empty_like(images)
    for dx in range(2 * r + 1):
        idx = (offsets[1] == dx).nonzero().squeeze(1)
        out[idx] = rows[idx, :, :, dx : dx + w]
    return out


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of every image.

    Applied after ``translate``, this is a random crop: a 28 window of images shifted by up
    to 2 pixels never reaches the padding. Smaller training images are a cheap way to spend
    early epochs (a 28x28 step is ~0.75x the work of a 32x32 one in a conv net).
    """
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size].contiguous()


def cutout(images: torch.Tensor, size: int, generator: torch.Generator, mode: str = "inside") -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of every image.

    ``mode="inside"`` (airbench96): the square lies fully inside the image (``size`` at most the
    image side, which AugmentSpec checks at setup); its top-left corner is uniform over the
    positions that keep it inside, so every image loses exactly ``size**2`` pixels.
    ``mode="clipped"`` (DeVries & Taylor 2017, the Cutout paper's code): the centre is uniform
    over all pixels and the square is clipped at the border, masking ~18% less on average at
    12 px of 32. Zero is the mean after normalization, so the square carries no signal.
    """
    if size <= 0:
        return images
    n, _, h, w = images.shape
    gen_device = generator.device
    if mode == "clipped":
        top = torch.randint(0, h, (n, 1, 1), generator=generator, device=gen_device).to(images.device) - size // 2
        left = torch.randint(0, w, (n, 1, 1), generator=generator, device=gen_device).to(images.device) - size // 2
    else:
        top = torch.randint(0, h - size + 1, (n, 1, 1), generator=generator, device=gen_device).to(images.device)
        left = torch.randint(0, w - size + 1, (n, 1, 1), generator=generator, device=gen_device).to(images.device)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)
