"""One decode for training and predict: the same pixels from the same file, whatever its size or mode.

Real Pillow files in tmp_path, decoded through the real entry points: ``ImageFolderSource``
(training/eval data) and ``cifar_lab.tasks.predict.load_image`` (``cifar-lab predict``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_lab.data.decode import decode_image
from cifar_lab.data.sources import ImageFolderSource
from cifar_lab.tasks.predict import load_image


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus fine noise: resampling filters differ visibly on it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 3 + y / 5)], axis=-1)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
    return path


def _train_and_predict(files: dict[str, Image.Image], tmp_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (pixels as the folder source decodes them, pixels as predict decodes them)."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for name, image in files.items():
            _save(image, root / split / "c" / name)
    arrays = ImageFolderSource(str(root), cache_dir=str(tmp_path / "cache")).load()
    names = sorted(files)  # the layout orders members by path within a class
    return {name: (arrays.train_images[i], load_image(root / "test" / "c" / name)) for i, name in enumerate(names)}


def test_training_and_predict_decode_a_larger_photo_identically(tmp_path: Path) -> None:
    photo = Image.fromarray(_photo(97, 61))
    files = {
        "photo.jpg": photo,
        "photo.png": photo,
        "big.jpg": Image.fromarray(_photo(300, 260, seed=1)),  # JPEG draft decodes it at 1/8 scale
        "small.png": Image.fromarray(_photo(20, 13, seed=2)),  # upscaled
    }
    decoded = _train_and_predict(files, tmp_path)
    for name, (train, predict) in decoded.items():
        assert train.shape == predict.shape == (32, 32, 3) and train.dtype == predict.dtype == np.uint8, name
        np.testing.assert_array_equal(train, predict, err_msg=name)
    # ... and it is the documented resampling: antialiased BICUBIC (a PNG has no draft scale).
    expected = photo.resize((32, 32), Image.Resampling.BICUBIC, reducing_gap=3.0)
    np.testing.assert_array_equal(decoded["photo.png"][0], np.asarray(expected))
    assert not np.array_equal(
        decoded["photo.png"][0], np.asarray(photo.resize((32, 32), Image.Resampling.BILINEAR))
    )  # the test tells the filters apart


@pytest.mark.parametrize("size", [32, 45])
def test_every_mode_becomes_the_same_rgb_for_training_and_predict(tmp_path: Path, size: int) -> None:
    rgb = Image.fromarray(_photo(size, size))
    files = {
        "gray.png": rgb.convert("L"),
        "gray_alpha.png": rgb.convert("LA"),
        "palette.png": rgb.convert("P", palette=Image.Palette.ADAPTIVE),
        "rgba.png": rgb.convert("RGBA"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "gray16.png": Image.fromarray(_photo(size, size)[..., 0].astype(np.uint16) * 257),
    }
    for name, (train, predict) in _train_and_predict(files, tmp_path).items():
        assert train.shape == (32, 32, 3), name
        np.testing.assert_array_equal(train, predict, err_msg=name)


def test_32x32_images_are_not_resampled(tmp_path: Path) -> None:
    """The CIFAR-10 JPEG copy is 32x32: its pixels, so its runs, must not change."""
    pixels = _photo(32, 32)
    png = _save(Image.fromarray(pixels), tmp_path / "a.png")
    jpg = _save(Image.fromarray(pixels), tmp_path / "a.jpg")
    np.testing.assert_array_equal(decode_image(png.read_bytes(), 32)[0], pixels)
    with Image.open(jpg) as image:  # a JPEG's pixels are its plain decode, not resampled
        np.testing.assert_array_equal(decode_image(jpg.read_bytes(), 32)[0], np.asarray(image.convert("RGB")))
    for path in (png, jpg):
        np.testing.assert_array_equal(load_image(path), decode_image(path, 32)[0])
        assert decode_image(path, 32)[1] == (32, 32)
