"""Fixtures for the data tests: tiny image trees (PNG + JPEG) as a folder and as archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# Solid colour per class: the decoded pixels tell which class an image was filed under.
CLASS_COLORS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "frog": (30, 30, 200)}
PER_SPLIT = {"train": 4, "test": 2}


def image_bytes(color: tuple[int, int, int] = (0, 0, 0), size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> bytes:
    """An encoded solid-colour image."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def standard_files() -> dict[str, bytes]:
    """train/<class>/* and test/<class>/*, half PNG, half JPEG, all 32x32."""
    files = {}
    for split, count in PER_SPLIT.items():
        for name, color in CLASS_COLORS.items():
            for i in range(count):
                fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
                files[f"{split}/{name}/{i:03d}.{ext}"] = image_bytes(color, fmt=fmt)
    return files


def write_tree(root: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """Write ``files`` (relative path -> bytes) and empty ``dirs`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def pack(files: dict[str, bytes], target: Path, dirs: tuple[str, ...] = ()) -> Path:
    """Write ``files`` as an archive whose kind follows ``target``'s suffix (.tar/.tar.gz/.tgz/.zip)."""
    if target.suffix == ".zip":
        with zipfile.ZipFile(target, "w") as zf:
            for rel in dirs:
                zf.writestr(rel.rstrip("/") + "/", b"")
            for rel, data in files.items():
                zf.writestr(rel, data)
        return target
    mode = "w:gz" if target.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(target, mode) as tf:
        for rel in dirs:
            info = tarfile.TarInfo(rel.rstrip("/"))
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return target


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may write to the real ~/.cache: the default cache dir points into tmp."""
    default = tmp_path_factory.mktemp("default-cache")
    monkeypatch.setenv("CIFAR_LAB_CACHE_DIR", str(default))
    return default


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def files() -> dict[str, bytes]:
    return standard_files()


@pytest.fixture
def image_tree(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """The standard tree as a folder."""
    return write_tree(tmp_path / "tree", files)


@pytest.fixture(params=["folder", "tar", "tar.gz", "tgz", "zip", "wrapped.tar.gz", "wrapped.zip"])
def any_source(request: pytest.FixtureRequest, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """The standard tree in each supported container (wrapped: inside one top-level folder)."""
    kind: str = request.param
    (tmp_path / "src").mkdir()
    if kind == "folder":
        return write_tree(tmp_path / "src" / "tree", files)
    if kind.startswith("wrapped."):
        files = {f"cifar-mini/{rel}": data for rel, data in files.items()}
        kind = kind.removeprefix("wrapped.")
    return pack(files, tmp_path / "src" / f"tree.{kind}")


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a custom tree (files dict, empty dirs) as a folder under tmp_path."""

    def make(files: dict[str, bytes], dirs: tuple[str, ...] = (), name: str = "custom") -> Path:
        return write_tree(tmp_path / name, files, dirs)

    return make


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of everything under root (to prove nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def class_of_pixels(images: np.ndarray) -> list[str]:
    """The class whose colour each (solid-colour) image is closest to."""
    names = list(CLASS_COLORS)
    colors = np.array([CLASS_COLORS[n] for n in names], dtype=np.float64)
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    return [names[i] for i in np.abs(means[:, None, :] - colors[None]).sum(-1).argmin(1)]


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for tests (importing from a conftest module is fragile)."""
    return SimpleNamespace(
        CLASS_COLORS=CLASS_COLORS,
        PER_SPLIT=PER_SPLIT,
        image_bytes=image_bytes,
        standard_files=standard_files,
        write_tree=write_tree,
        pack=pack,
        snapshot=snapshot,
        class_of_pixels=class_of_pixels,
    )
