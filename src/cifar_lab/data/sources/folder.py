"""A folder or tar/zip archive of ``train/<class>/*`` and ``test/<class>/*`` image files."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from cifar_lab.config.values import Rule, check_given, is_int
from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.cache import (
    cache_file,
    default_cache_dir,
    load_arrays,
    save_arrays,
    source_fingerprint,
)
from cifar_lab.data.decode import DECODE_ERRORS, decode_image
from cifar_lab.data.sources.containers import TAR_SUFFIXES, ZIP_SUFFIXES, Container, archive_kind, open_container
from cifar_lab.data.sources.layout import LAYOUT_HINT, SPLITS, Layout, ignored
from cifar_lab.errors import ConfigError, DataError, one_line

log = logging.getLogger(__name__)

_SIZE_MODES = ("resize", "error")
# the constructor's arguments' rules (data.source.*)
_RULES: dict[str, Rule] = {
    "on_size_mismatch": (lambda v: v in _SIZE_MODES, f"must be one of: {', '.join(_SIZE_MODES)}"),
    "image_size": (lambda v: is_int(v) and v >= 1, "must be a positive integer"),
}


class ImageFolderSource:
    """``train/<class>/*`` and ``test/<class>/*`` images, in a folder or a tar/zip archive.

    Archive members are read straight into memory (nothing is extracted, nothing is written
    next to the data); decoded arrays are cached in ``cache_dir`` keyed by the source's
    path, size and mtime, so the next run reads one file instead of decoding again.
    """

    def __init__(
        self,
        path: str,
        cache_dir: str | None = None,
        image_size: int = 32,
        on_size_mismatch: str = "resize",
    ) -> None:
        check_given(dict(on_size_mismatch=on_size_mismatch, image_size=image_size), "data.source", _RULES)
        self.path = path
        self.cache_dir = cache_dir
        self.image_size = image_size
        self.on_size_mismatch = on_size_mismatch

    def prepare(self) -> None:
        """Decode the source into the cache unless a cache for it exists. Its validity is checked
        by ``load()`` (which rebuilds a corrupt one), so the cache is read once per run, not twice."""
        if not self.cache_path().is_file():
            self.load()

    def load(self) -> ImageArrays:
        """The cached arrays if the cache matches the source, else decode and cache them."""
        target = self.cache_path()
        arrays = load_arrays(target)
        if arrays is not None:
            log.info("loaded %r from cache '%s'", arrays, target)
            return arrays
        arrays = decode_image_folder(Path(self.path), self.image_size, self.on_size_mismatch)
        save_arrays(target, arrays)
        return arrays

    def cache_path(self) -> Path:
        """The cache file for the source as it is now (stats every file of a folder source)."""
        source = _check_source_path(Path(self.path).expanduser())
        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        if source.is_dir() and cache_dir.resolve().is_relative_to(source.resolve()):
            raise ConfigError(
                f"cache folder '{cache_dir}' is inside the data folder '{source}', so every "
                f"cache write would change the data; set paths.cache_dir to a folder outside it"
            )
        key = [source_fingerprint(source, skip=ignored), self.image_size, self.on_size_mismatch]
        return cache_file(cache_dir, _display_stem(source.resolve()), key)


def decode_image_folder(path: Path, image_size: int = 32, on_size_mismatch: str = "resize") -> ImageArrays:
    """Decode every image of a folder/archive source (no cache): checks the layout first."""
    path = _check_source_path(path.expanduser())
    start = time.perf_counter()
    with open_container(path) as container:
        files, dirs = container.listing()
        layout = Layout.from_listing(path, files, dirs)
        arrays, resized = _decode_all(container, layout, image_size, on_size_mismatch)
    if resized:
        log.warning(
            "resized %d of %d images in '%s' to %dx%d (set data.source.on_size_mismatch=error to reject them instead)",
            resized,
            layout.count,
            path,
            image_size,
            image_size,
        )
    log.info("decoded %r from '%s' in %.1f s", arrays, path, time.perf_counter() - start)
    return arrays


def _decode_all(
    container: Container, layout: Layout, image_size: int, on_size_mismatch: str
) -> tuple[ImageArrays, int]:
    images = {s: np.empty((len(layout.members[s]), image_size, image_size, 3), np.uint8) for s in SPLITS}
    labels = {s: np.asarray(layout.labels[s], dtype=np.int64) for s in SPLITS}
    slot = {name: (s, i) for s in SPLITS for i, name in enumerate(layout.members[s])}
    resized = 0
    for name, data in container.read(list(slot)):
        try:
            array, size = decode_image(data, image_size)
        except DECODE_ERRORS as exc:
            # PIL's own message for an unknown format names a BytesIO object, not the file.
            reason = "unknown format" if isinstance(exc, UnidentifiedImageError) else one_line(exc)
            raise DataError(
                f"'{name}' in '{layout.source}' is not a readable image ({reason}); delete or replace it"
            ) from exc
        if size != (image_size, image_size):
            if on_size_mismatch == "error":
                raise DataError(
                    f"'{name}' in '{layout.source}' is {size[0]}x{size[1]}, not "
                    f"{image_size}x{image_size}; resize the images, or set "
                    f"data.source.on_size_mismatch=resize"
                )
            resized += 1
        split, index = slot[name]
        images[split][index] = array
    arrays = ImageArrays(
        train_images=images["train"],
        train_labels=labels["train"],
        test_images=images["test"],
        test_labels=labels["test"],
        classes=layout.classes,
    )
    return arrays, resized


def _check_source_path(path: Path) -> Path:
    """Fail early, in one line, on a source path that cannot be a dataset."""
    if not path.exists():
        raise DataError(
            f"data path '{path}' does not exist (resolved: '{path.resolve()}'); set data.path to {LAYOUT_HINT}"
        )
    if path.is_dir():
        return path
    if not path.is_file() or not archive_kind(path):
        raise DataError(
            f"data path '{path}' is neither a folder nor a supported archive "
            f"({', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)}); set data.path to {LAYOUT_HINT}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"data path '{path}' is an empty file; set data.path to {LAYOUT_HINT}")
    return path


def _display_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(TAR_SUFFIXES + ZIP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
