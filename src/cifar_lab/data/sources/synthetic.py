"""Generated, learnable images: no download, no files."""

from __future__ import annotations

import numpy as np

from cifar_lab.config.values import Rule, check_given, is_int, is_number
from cifar_lab.data.arrays import ImageArrays

_POSITIVE: Rule = (lambda v: is_int(v) and v >= 1, "must be a positive integer")
# the constructor's arguments' rules (data.source.*)
_RULES: dict[str, Rule] = {
    "num_classes": _POSITIVE,
    "train_per_class": _POSITIVE,
    "test_per_class": _POSITIVE,
    "image_size": _POSITIVE,
    "noise": (lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
    "seed": (lambda v: is_int(v) and v >= 0, "must be a whole number >= 0"),
}


class SyntheticSource:
    """Generated, learnable images: for tests, smoke runs and CI without any dataset.

    Each class is a smooth random colour pattern (a few low-frequency 2-D waves); a sample is
    its class pattern, circularly shifted by a few pixels, scaled in brightness, plus Gaussian
    noise. A small CNN (or even a nearest-class-mean classifier) learns it in a few steps, yet
    no two images are alike. Same seed, same data; the test split has its own random stream.
    """

    _WAVES = 4  # waves per class pattern
    _MAX_FREQ = 2  # cycles per image: low, so that a few pixels of shift keep the class
    _MAX_SHIFT = 4  # pixels, in each direction
    _CHUNK = 2048  # images generated at once (bounds the float32 working memory)

    def __init__(
        self,
        num_classes: int = 10,
        train_per_class: int = 100,
        test_per_class: int = 20,
        image_size: int = 32,
        noise: float = 0.5,  # std of the pixel noise, relative to the pattern's (~1)
        seed: int = 0,
    ) -> None:
        check_given(
            dict(
                num_classes=num_classes,
                train_per_class=train_per_class,
                test_per_class=test_per_class,
                image_size=image_size,
                noise=noise,
                seed=seed,
            ),
            "data.source",
            _RULES,
        )
        self.num_classes = num_classes
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.image_size = image_size
        self.noise = float(noise)
        self.seed = seed

    def prepare(self) -> None:
        """Nothing to fetch: generation is cheap and deterministic."""

    def load(self) -> ImageArrays:
        """Generate both splits (same seed -> same arrays)."""
        pattern_rng, train_rng, test_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(3)
        )
        waves = self._patterns(pattern_rng)
        train_labels = np.repeat(np.arange(self.num_classes, dtype=np.int64), self.train_per_class)
        test_labels = np.repeat(np.arange(self.num_classes, dtype=np.int64), self.test_per_class)
        return ImageArrays(
            train_images=self._images(train_rng, waves, train_labels),
            train_labels=train_labels,
            test_images=self._images(test_rng, waves, test_labels),
            test_labels=test_labels,
            classes=tuple(f"class_{i}" for i in range(self.num_classes)),
        )

    def _patterns(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        shape = (self.num_classes, self._WAVES)
        freq = rng.integers(-self._MAX_FREQ, self._MAX_FREQ + 1, size=(*shape, 2))
        freq[(freq == 0).all(-1)] = 1  # no constant "wave": the mean colour is set by `base`
        return {
            "freq": freq.astype(np.float32),
            "phase": rng.uniform(0, 2 * np.pi, size=shape).astype(np.float32),
            "color": (rng.standard_normal((*shape, 3)) / np.sqrt(self._WAVES)).astype(np.float32),
            "base": rng.uniform(-0.5, 0.5, size=(self.num_classes, 3)).astype(np.float32),
        }

    def _images(self, rng: np.random.Generator, waves: dict, labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), self.image_size, self.image_size, 3), np.uint8)
        for start in range(0, len(labels), self._CHUNK):
            chunk = labels[start : start + self._CHUNK]
            out[start : start + len(chunk)] = self._chunk(rng, waves, chunk)
        return out

    def _chunk(self, rng: np.random.Generator, waves: dict, labels: np.ndarray) -> np.ndarray:
        n, size = len(labels), self.image_size
        shift = rng.integers(-self._MAX_SHIFT, self._MAX_SHIFT + 1, size=(n, 2)).astype(np.float32)
        brightness = rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)).astype(np.float32)
        coords = np.arange(size, dtype=np.float32)
        image = np.zeros((n, size, size, 3), np.float32)
        for k in range(self._WAVES):
            fy, fx = waves["freq"][labels, k, 0], waves["freq"][labels, k, 1]
            # cos(a(y) + b(x)) = cos a cos b - sin a sin b: two outer products, not n*size^2 cos.
            a = 2 * np.pi * fy[:, None] * (coords + shift[:, :1]) / size + waves["phase"][labels, k, None]
            b = 2 * np.pi * fx[:, None] * (coords + shift[:, 1:]) / size
            wave = np.cos(a)[:, :, None] * np.cos(b)[:, None, :] - np.sin(a)[:, :, None] * np.sin(b)[:, None, :]
            image += wave[..., None] * waves["color"][labels, k, None, None, :]
        image += waves["base"][labels, None, None, :]
        image *= brightness
        image += self.noise * rng.standard_normal(image.shape, dtype=np.float32)
        return np.clip(128 + 50 * image, 0, 255).astype(np.uint8)
