"""Data sources: where the images come from, decoded once into uint8 arrays (ImageArrays).

Every source has the same small interface, so the DataModule does not care which one it got:

- ``__init__`` takes plain values (Hydra instantiates it from ``conf/data/*.yaml``) and does
  no I/O, so composing a config stays instant;
- ``prepare()`` fetches / decodes / caches; call it once, in one process (Lightning's
  ``prepare_data``);
- ``load()`` returns the ImageArrays quickly (from the cache or the source's own files), and
  prepares first if that was not done.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.cache import (
    cache_file,
    default_cache_dir,
    load_arrays,
    save_arrays,
    source_fingerprint,
)
from cifar_lab.errors import DataError, one_line

log = logging.getLogger(__name__)

_LAYOUT_HINT = "a folder or .tar/.tar.gz/.zip with train/<class>/* and test/<class>/*"


# --------------------------------------------------------------------------------------------
# Official CIFAR-10 / CIFAR-100 through torchvision
# --------------------------------------------------------------------------------------------

# data.source.dataset -> (torchvision.datasets class, name in messages). CIFAR-100 reads its fine
# labels (100 classes, names from the dataset's meta file): torchvision's CIFAR100 default.
_TORCHVISION_DATASETS = {"cifar10": ("CIFAR10", "CIFAR-10"), "cifar100": ("CIFAR100", "CIFAR-100")}


class TorchvisionCIFAR:
    """The official CIFAR-10 or CIFAR-100 (python pickles), downloaded and md5-checked by torchvision.

    Their files are already raw uint8 arrays, so it needs no cache of its own.
    """

    def __init__(self, root: str = "data", download: bool = True, dataset: str = "cifar10") -> None:
        if dataset not in _TORCHVISION_DATASETS:
            raise DataError(f"data.source.dataset={dataset!r} must be one of: {', '.join(_TORCHVISION_DATASETS)}")
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
        offline = f"without network, use a local copy: data=folder data.path=PATH ({_LAYOUT_HINT})"
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


# --------------------------------------------------------------------------------------------
# A folder or archive of image files
# --------------------------------------------------------------------------------------------

_SIZE_MODES = ("resize", "error")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZIP_SUFFIXES = (".zip",)
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})  # OS droppings
_SPLITS = ("train", "test")


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
        if on_size_mismatch not in _SIZE_MODES:
            raise DataError(
                f"data.source.on_size_mismatch={on_size_mismatch!r} must be one of: {', '.join(_SIZE_MODES)}"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise DataError(f"data.source.image_size={image_size!r} must be a positive integer")
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
            raise DataError(
                f"cache folder '{cache_dir}' is inside the data folder '{source}', so every "
                f"cache write would change the data; set paths.cache_dir to a folder outside it"
            )
        key = [source_fingerprint(source, skip=_ignored), self.image_size, self.on_size_mismatch]
        return cache_file(cache_dir, _display_stem(source.resolve()), key)


def decode_image_folder(path: Path, image_size: int = 32, on_size_mismatch: str = "resize") -> ImageArrays:
    """Decode every image of a folder/archive source (no cache): checks the layout first."""
    path = _check_source_path(path.expanduser())
    start = time.perf_counter()
    with _open_container(path) as container:
        files, dirs = container.listing()
        layout = _Layout.from_listing(path, files, dirs)
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


def _decode_all(
    container: _Container, layout: _Layout, image_size: int, on_size_mismatch: str
) -> tuple[ImageArrays, int]:
    images = {s: np.empty((len(layout.members[s]), image_size, image_size, 3), np.uint8) for s in _SPLITS}
    labels = {s: np.asarray(layout.labels[s], dtype=np.int64) for s in _SPLITS}
    slot = {name: (s, i) for s in _SPLITS for i, name in enumerate(layout.members[s])}
    resized = 0
    for name, data in container.read(list(slot)):
        try:
            array, size = decode_image(data, image_size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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
            f"data path '{path}' does not exist (resolved: '{path.resolve()}'); set data.path to {_LAYOUT_HINT}"
        )
    if path.is_dir():
        return path
    if not path.is_file() or not _archive_kind(path):
        raise DataError(
            f"data path '{path}' is neither a folder nor a supported archive "
            f"({', '.join(_TAR_SUFFIXES + _ZIP_SUFFIXES)}); set data.path to {_LAYOUT_HINT}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"data path '{path}' is an empty file; set data.path to {_LAYOUT_HINT}")
    return path


def _archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    return None


def _display_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(_TAR_SUFFIXES + _ZIP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _ignored(name: str) -> bool:
    """Hidden files/folders (.DS_Store, .git) and OS droppings are not part of the dataset."""
    return name.startswith(".") or name in _IGNORED_NAMES


# ---- containers: the same listing/reading interface over a folder, a tar and a zip ---------


class _Container:
    """Lists and reads the files of a source; names are '/'-separated member names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def listing(self) -> tuple[list[str], list[str]]:
        """(file names, directory names), hidden ones included (the layout filters them)."""
        raise NotImplementedError

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (name, bytes) for ``names``, in whatever order is fastest for the container."""
        raise NotImplementedError

    def _corrupt(self, exc: BaseException) -> DataError:
        return DataError(
            f"could not read archive '{self.path}' ({self._reason(exc)}); it is truncated or "
            f"corrupt: download or create it again"
        )

    def _reason(self, exc: BaseException) -> str:
        return one_line(exc)


class _FolderContainer(_Container):
    def listing(self) -> tuple[list[str], list[str]]:
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = PurePosixPath(Path(dirpath).relative_to(self.path).as_posix())
            dirs.extend(str(rel / d) for d in dirnames)
            files.extend(str(rel / f) for f in filenames)
        return files, dirs

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                data = (self.path / name).read_bytes()
            except OSError as exc:
                raise DataError(f"could not read '{self.path / name}' ({one_line(exc)})") from exc
            yield name, data


class _TarContainer(_Container):
    _ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # gzip/bz2/lzma/zlib errors too

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.tar = tarfile.open(path, "r:*")
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc

    def close(self) -> None:
        self.tar.close()

    def _reason(self, exc: BaseException) -> str:
        # tarfile.open(mode="r:*") lists each of its four failed attempts (gz, bz2, xz, plain)
        if isinstance(exc, tarfile.ReadError) and str(exc).startswith("file could not be opened"):
            return "not a tar file, plain or compressed with gzip, bz2 or xz"
        return super()._reason(exc)

    def listing(self) -> tuple[list[str], list[str]]:
        try:
            members = self.tar.getmembers()  # one pass over the (compressed) stream
            self._check_end_marker()
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc
        files = [m.name for m in members if m.isfile()]
        dirs = [m.name for m in members if m.isdir()]
        return files, dirs

    def _check_end_marker(self) -> None:
        """tarfile silently stops at a cut: only the zero end-of-archive block proves the end.

        Without this check, a plain .tar cut between two members would load as a smaller
        dataset (or fail with a misleading layout error).
        """
        self.tar.fileobj.seek(self.tar.offset)  # where getmembers() stopped
        if self.tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
            raise tarfile.ReadError("the archive ends before its end-of-archive marker")

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        wanted = set(names)
        # In archive order: a compressed tar is only fast to read front to back.
        for member in self.tar.getmembers():
            if member.name in wanted:
                try:
                    data = self.tar.extractfile(member).read()
                except self._ERRORS as exc:
                    raise self._corrupt(exc) from exc
                yield member.name, data


class _ZipContainer(_Container):
    _ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError, ValueError)

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc

    def close(self) -> None:
        self.zip.close()

    def listing(self) -> tuple[list[str], list[str]]:
        infos = self.zip.infolist()
        return [i.filename for i in infos if not i.is_dir()], [i.filename for i in infos if i.is_dir()]

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                data = self.zip.read(name)  # checks the member's CRC
            except self._ERRORS as exc:
                raise self._corrupt(exc) from exc
            yield name, data


def _open_container(path: Path) -> _Container:
    if path.is_dir():
        return _FolderContainer(path)
    return _TarContainer(path) if _archive_kind(path) == "tar" else _ZipContainer(path)


# ---- layout: which member is which split/class, checked before anything is decoded ---------


class _Layout:
    """The split/class structure of a source, with every structural problem as one DataError."""

    def __init__(self, source: Path, classes: tuple[str, ...], members: dict, labels: dict) -> None:
        self.source = source
        self.classes = classes
        self.members = members  # split -> member names, sorted by (class, path)
        self.labels = labels  # split -> label per member
        self.count = sum(len(m) for m in members.values())

    @classmethod
    def from_listing(cls, source: Path, files: list[str], dirs: list[str]) -> _Layout:
        file_parts = _visible_parts(files)
        dir_parts = _visible_parts(dirs)
        if not file_parts and not dir_parts:
            raise DataError(f"data path '{source}' is empty; it must hold {_LAYOUT_HINT}")
        prefix = _wrapper_prefix(file_parts, dir_parts)
        file_parts = {n: p[prefix:] for n, p in file_parts.items()}
        dir_parts = {n: p[prefix:] for n, p in dir_parts.items()}
        _check_splits(source, file_parts, dir_parts)
        per_split = {s: _class_members(source, s, file_parts, dir_parts) for s in _SPLITS}
        classes = _check_classes(source, per_split)
        members, labels = {}, {}
        for split, by_class in per_split.items():  # by_class lists are in path order
            members[split] = [n for c in classes for n in by_class[c]]
            labels[split] = [label for label, c in enumerate(classes) for _ in by_class[c]]
        return cls(source, classes, members, labels)


def _visible_parts(names: list[str]) -> dict[str, tuple[str, ...]]:
    """member name -> path parts, without '.'/'' parts and without hidden/ignored entries."""
    out = {}
    for name in names:
        parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", ".", "/"))
        if parts and not any(_ignored(p) for p in parts):
            out[name] = parts
    return out


def _wrapper_prefix(file_parts: dict, dir_parts: dict) -> int:
    """1 when train/ and test/ sit inside one top-level folder (e.g. 'cifar10/train/...')."""
    all_parts = list(file_parts.values()) + list(dir_parts.values())
    top_dirs = {p[0] for p in dir_parts.values()} | {p[0] for p in file_parts.values() if len(p) > 1}
    if top_dirs & set(_SPLITS) or len(top_dirs) != 1:
        return 0
    inner = {p[1] for p in all_parts if len(p) > 1}
    return 1 if inner & set(_SPLITS) else 0


def _check_splits(source: Path, file_parts: dict, dir_parts: dict) -> None:
    top_dirs = {p[0] for p in dir_parts.values() if p} | {p[0] for p in file_parts.values() if len(p) > 1}
    missing = [s for s in _SPLITS if s not in top_dirs]
    if missing:
        found = ", ".join(f"{d}/" for d in sorted(top_dirs)) or "no folders"
        raise DataError(
            f"data path '{source}' has no {' or '.join(f'{m}/' for m in missing)} folder "
            f"(found: {found}); it must hold train/<class>/* and test/<class>/* "
            f"(optionally inside one top-level folder)"
        )


def _class_members(source: Path, split: str, file_parts: dict, dir_parts: dict) -> dict[str, list[str]]:
    """class name -> member names of one split; empty lists for empty class folders."""
    by_class: dict[str, list[str]] = {p[1]: [] for p in dir_parts.values() if len(p) > 1 and p[0] == split}
    for name, parts in sorted(file_parts.items(), key=lambda item: item[1]):
        if parts[0] != split:
            continue
        if len(parts) == 2:
            raise DataError(f"'{name}' in '{source}' is not inside a class folder; move it to {split}/<class>/")
        by_class.setdefault(parts[1], []).append(name)
    if not by_class:
        raise DataError(f"'{split}/' in '{source}' has no class folders; expected {split}/<class>/*")
    return by_class


def _check_classes(source: Path, per_split: dict[str, dict[str, list[str]]]) -> tuple[str, ...]:
    train, test = set(per_split["train"]), set(per_split["test"])
    if train != test:
        differences = (("train", train - test), ("test", test - train))
        only = [f"only in {split}/: {sorted(names)}" for split, names in differences if names]
        raise DataError(
            f"class folders differ between train/ and test/ in '{source}' ({'; '.join(only)}); "
            f"both splits need the same classes"
        )
    for split in _SPLITS:
        empty = sorted(c for c, names in per_split[split].items() if not names)
        if empty:
            raise DataError(
                f"class folder '{split}/{empty[0]}' in '{source}' has no images; add images or "
                f"remove the class from both train/ and test/"
            )
    return tuple(sorted(train))


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


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
        for name, value in (
            ("num_classes", num_classes),
            ("train_per_class", train_per_class),
            ("test_per_class", test_per_class),
            ("image_size", image_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"data.source.{name}={value!r} must be a positive integer")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise DataError(f"data.source.noise={noise!r} must be a number >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"data.source.seed={seed!r} must be a whole number >= 0")
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
