"""On-disk cache of decoded datasets, so that images are decoded once, not once per run.

One uncompressed ``.npz`` per (source, decode settings): reading it back is a plain memory copy
(~0.2 s for CIFAR-10), and its zip CRCs catch a corrupt file. Files are written atomically
(``cifar_lab.runtime.io.atomic_open``: a temporary file in the same folder, fsynced, then renamed
over the final name), so a crash, a power loss or a second process never leaves a half-written
cache behind under the final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar_lab.data.arrays import ImageArrays
from cifar_lab.errors import DataError, one_line
from cifar_lab.runtime.io import atomic_open

log = logging.getLogger(__name__)

# Bump when the decoding or the file layout changes, so that old caches are not reused.
CACHE_FORMAT_VERSION = 2  # 2: images not image_size x image_size are resampled BICUBIC, not BILINEAR

_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes")


def default_cache_dir() -> Path:
    """Where decoded datasets go when no cache_dir is configured.

    ``$CIFAR_LAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cifar_lab``, else ``~/.cache/cifar_lab``:
    outside the project and the data, so that neither gets large files written into it.
    """
    explicit = os.environ.get("CIFAR_LAB_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cifar_lab"


def source_fingerprint(path: Path, skip: Callable[[str], bool] | None = None) -> list:
    """What identifies a source's content cheaply: resolved path, and size + mtime of its files.

    For a folder, every file below it counts (except names for which ``skip`` is true, e.g.
    hidden ones), so adding, removing or editing an image gives a new cache key.
    """
    path = path.resolve()
    if not path.is_dir():
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    listing = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not (skip and skip(d)))
        for name in sorted(f for f in filenames if not (skip and skip(f))):
            full = os.path.join(dirpath, name)
            stat = os.stat(full)
            listing.append([os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns])
    return [str(path), listing]


def cache_file(cache_dir: Path, name: str, key: object) -> Path:
    """Path of the cache file for ``key`` (any JSON-able value): readable name + key hash."""
    blob = json.dumps([CACHE_FORMAT_VERSION, key], sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()[:20]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"
    return cache_dir / f"{safe}-{digest}.npz"


def save_arrays(path: Path, arrays: ImageArrays) -> None:
    """Write ``arrays`` to ``path`` atomically; a failure to write is a warning, not an error.

    Training can go on without a cache (it only costs a re-decode next time), so an unwritable
    cache folder should not stop a run.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning(
            "could not write the data cache to '%s' (%s); set paths.cache_dir or "
            "CIFAR_LAB_CACHE_DIR to a writable folder",
            path.parent,
            exc,
        )
        return
    try:
        # 0644: mkstemp's 0600 would hide a shared cache from the other users of the folder.
        with atomic_open(path, mode=0o644) as f:
            np.savez(
                f,
                train_images=arrays.train_images,
                train_labels=arrays.train_labels,
                test_images=arrays.test_images,
                test_labels=arrays.test_labels,
                classes=np.array(arrays.classes, dtype=str),
            )
    except OSError as exc:
        log.warning(
            "could not write the data cache '%s' (%s); set paths.cache_dir or "
            "CIFAR_LAB_CACHE_DIR to a writable folder with free space",
            path,
            exc,
        )


def load_arrays(path: Path) -> ImageArrays | None:
    """Read a cache file; None when it is absent, or corrupt (then it is deleted, with a warning).

    Everything is checked (zip CRCs, keys, dtypes, shapes, label range) before the data is
    trusted: a bad cache must cost a rebuild, never a crash or silently wrong data.
    """
    if not path.is_file():
        return None
    try:
        return _read(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # DataError (a failed ImageArrays check) is a ValueError too.
        log.warning("data cache '%s' is unreadable (%s); deleting it and decoding again", path, one_line(exc))
        _remove(path)
        return None


def _read(path: Path) -> ImageArrays:
    with np.load(path, allow_pickle=False) as npz:
        if sorted(npz.files) != sorted(_KEYS):
            raise KeyError(f"expected arrays {sorted(_KEYS)}, found {sorted(npz.files)}")
        data = {key: npz[key] for key in _KEYS}  # reads every member: zip CRCs are checked
    classes = data.pop("classes")
    if classes.ndim != 1 or classes.dtype.kind != "U":
        raise DataError(f"class names have dtype {classes.dtype} and shape {classes.shape}")
    return ImageArrays(**data, classes=tuple(str(c) for c in classes))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete '%s' (%s)", path, exc)
