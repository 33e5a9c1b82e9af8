"""The one decode of an image file into the uint8 RGB array a net sees, for training and predict alike.

Training data (``ImageFolderSource``) and ``cifar-lab predict`` both call ``decode_image``, so a
photo larger (or smaller) than the net's input is resized the same way to train and to predict:
a different resampling would feed predict slightly different pixels than the ones the net was
trained and evaluated on.

Resampling, for images that are not already ``size x size`` (those are never resampled, only
converted to RGB when they are not RGB already):

1. ``draft`` first: a JPEG at least twice the target size in both sides is decoded at 1/2, 1/4
   or 1/8 scale by libjpeg's scaled IDCT (an averaging, so antialiased), never below the target.
   A big photo decodes several times faster; other formats ignore it.
2. then ``resize`` with BICUBIC: Pillow scales the filter's support with the reduction, so a
   downscale is properly antialiased (no aliasing from skipped pixels), and an upscale of a small
   image is smoother than BILINEAR's. ``reducing_gap=3.0`` lets Pillow box-reduce a huge non-JPEG
   image to within 3x of the target first; Pillow documents that as indistinguishable from a full
   resample, at a fraction of its cost.

RGB conversion is Pillow's ``convert("RGB")`` for every mode: palette and grayscale expand,
alpha is dropped (RGBA -> its RGB channels, not composited), CMYK goes through Pillow's
conversion, 16/32-bit integer modes are clipped to 0..255 by Pillow.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

# What Pillow raises for bytes that are no (readable) image: UnidentifiedImageError is an
# OSError, a truncated file an OSError, some corrupt headers SyntaxError/ValueError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 3.0


def decode_image(source: bytes | str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An encoded image (its bytes or its path) -> (size, size, 3) uint8 RGB, and its original (w, h).

    Raises one of ``DECODE_ERRORS`` when the input is no readable image.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        original = img.size
        if original != (size, size):
            img.draft("RGB", (size, size))  # JPEG only: decode a big image at a reduced scale
            img = img.convert("RGB").resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
        elif img.mode != "RGB":
            img = img.convert("RGB")
        else:
            img.load()
        return np.array(img, dtype=np.uint8), original
