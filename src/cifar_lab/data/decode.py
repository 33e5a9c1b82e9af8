"""Decoding one image file into the uint8 RGB array the nets see."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_image(data: bytes, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One encoded image -> (image_size, image_size, 3) uint8 RGB, and its original (w, h).

    Raises OSError/ValueError/SyntaxError (what PIL raises) when the bytes are no image.
    """
    with Image.open(io.BytesIO(data)) as img:
        size = img.size
        if size != (image_size, image_size):
            img.draft("RGB", (image_size, image_size))  # JPEG: decode big images at low res
            img = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        elif img.mode != "RGB":
            img = img.convert("RGB")
        else:
            img.load()
        return np.asarray(img), size
