"""Data sources, decoded-data cache and ImageArrays: formats, errors, caching, synthetic data."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cifar_lab.data.sources.folder as folder_source
from cifar_lab.data.arrays import ImageArrays
from cifar_lab.data.cache import default_cache_dir, load_arrays, save_arrays
from cifar_lab.data.sources import ImageFolderSource, SyntheticSource, TorchvisionCIFAR, TorchvisionCIFAR10
from cifar_lab.errors import ConfigError, DataError

REAL_ARCHIVE = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    """The message of a DataError or ConfigError, checked to be a single line (it is printed as is)."""
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def load_error(path: Path, cache_dir: Path, **kwargs) -> str:
    with pytest.raises(DataError) as excinfo:
        ImageFolderSource(str(path), cache_dir=str(cache_dir), **kwargs).load()
    return one_line_error(excinfo)


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the per-image decoder (a one-element list, to read after the fact)."""
    calls = [0]
    real = folder_source.decode_image

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(folder_source, "decode_image", counting)
    return calls


# ---- folder / archive sources: formats --------------------------------------------------------


@pytest.mark.floors
def test_every_container_loads_with_correct_labels(any_source: Path, cache_dir: Path, kit) -> None:
    arrays = ImageFolderSource(str(any_source), cache_dir=str(cache_dir)).load()
    assert arrays.classes == ("cat", "dog", "frog")
    assert arrays.num_classes == 3
    n_train, n_test = 3 * kit.PER_SPLIT["train"], 3 * kit.PER_SPLIT["test"]
    assert arrays.train_images.shape == (n_train, 32, 32, 3) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images.shape == (n_test, 32, 32, 3) and arrays.test_images.dtype == np.uint8
    assert arrays.train_labels.dtype == np.int64 and arrays.test_labels.dtype == np.int64
    for images, labels in ((arrays.train_images, arrays.train_labels), (arrays.test_images, arrays.test_labels)):
        # Each image's colour says which class folder it came from: labels must agree.
        assert [arrays.classes[i] for i in labels] == kit.class_of_pixels(images)
    assert np.bincount(arrays.train_labels).tolist() == [kit.PER_SPLIT["train"]] * 3


def test_containers_decode_identically(any_source: Path, image_tree: Path, cache_dir: Path) -> None:
    """Same images in the same order whatever the container (order = sorted paths)."""
    reference = ImageFolderSource(str(image_tree), cache_dir=str(cache_dir / "ref")).load()
    arrays = ImageFolderSource(str(any_source), cache_dir=str(cache_dir)).load()
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(arrays, name), getattr(reference, name))


def test_hidden_files_and_os_droppings_are_ignored(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    junk = {
        ".DS_Store": b"junk",
        "train/.DS_Store": b"junk",
        "train/cat/._000.png": b"junk",
        "train/.hidden/x.png": b"junk",
        "__MACOSX/train/cat/._000.png": b"junk",
        "test/dog/Thumbs.db": b"junk",
        "README.md": b"a file at the top is not part of the dataset",
    }
    archive = kit.pack({**files, **junk}, tmp_path / "junk.zip")
    arrays = ImageFolderSource(str(archive), cache_dir=str(cache_dir)).load()
    assert arrays.classes == ("cat", "dog", "frog")
    assert len(arrays.train_images) == 3 * kit.PER_SPLIT["train"]


def test_modes_and_sizes_are_normalised(make_tree, cache_dir: Path) -> None:
    """Grayscale, RGBA and palette images become RGB; image_size resizes everything."""

    def encoded(mode: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (100, 100, 100)).convert(mode).save(buf, format="PNG")
        return buf.getvalue()

    files = {f"{s}/a/{m}.png": encoded(m) for s in ("train", "test") for m in ("L", "RGBA", "P", "RGB")}
    arrays = ImageFolderSource(str(make_tree(files)), cache_dir=str(cache_dir), image_size=8).load()
    assert arrays.train_images.shape == (4, 8, 8, 3)
    assert np.abs(arrays.train_images.astype(int) - 100).max() <= 2


@pytest.mark.floors
def test_mismatched_sizes_are_resized_with_one_warning(files, kit, make_tree, cache_dir, caplog) -> None:
    files["train/cat/big.png"] = kit.image_bytes(kit.CLASS_COLORS["cat"], size=(64, 48))
    files["test/dog/small.jpg"] = kit.image_bytes(kit.CLASS_COLORS["dog"], size=(20, 20), fmt="JPEG")
    with caplog.at_level(logging.WARNING):
        arrays = ImageFolderSource(str(make_tree(files)), cache_dir=str(cache_dir)).load()
    assert arrays.train_images.shape[1:] == (32, 32, 3)
    assert [arrays.classes[i] for i in arrays.train_labels] == kit.class_of_pixels(arrays.train_images)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "resized 2 of" in warnings[0].getMessage()


def test_mismatched_size_is_an_error_when_asked(files, kit, make_tree, cache_dir) -> None:
    files["train/dog/big.png"] = kit.image_bytes(size=(64, 48))
    message = load_error(make_tree(files), cache_dir, on_size_mismatch="error")
    assert "train/dog/big.png" in message and "64x48, not 32x32" in message
    assert "on_size_mismatch=resize" in message


# ---- folder / archive sources: one-line errors ---------------------------------------------------


def test_error_missing_path(tmp_path: Path, cache_dir: Path) -> None:
    message = load_error(tmp_path / "nowhere", cache_dir)
    assert "does not exist" in message and "nowhere" in message and "train/<class>" in message


def test_error_empty_folder(make_tree, cache_dir: Path) -> None:
    assert "is empty" in load_error(make_tree({}), cache_dir)


def test_error_folder_with_only_hidden_files(make_tree, cache_dir: Path) -> None:
    assert "is empty" in load_error(make_tree({".DS_Store": b"x"}), cache_dir)


def test_error_empty_archive_file(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "data.tar.gz").write_bytes(b"")
    assert "is an empty file" in load_error(tmp_path / "data.tar.gz", cache_dir)


@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_error_archive_without_members(kit, tmp_path: Path, cache_dir: Path, suffix: str) -> None:
    archive = kit.pack({}, tmp_path / f"data{suffix}")
    assert "is empty" in load_error(archive, cache_dir)


@pytest.mark.parametrize("name", ["data.txt", "data.rar"])
def test_error_unsupported_file(tmp_path: Path, cache_dir: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"not a dataset")
    message = load_error(tmp_path / name, cache_dir)
    assert "neither a folder nor a supported archive" in message and ".tar.gz" in message


@pytest.mark.floors
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_error_truncated_archive(files, kit, tmp_path: Path, cache_dir: Path, suffix: str) -> None:
    archive = kit.pack(files, tmp_path / f"data{suffix}")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    message = load_error(archive, cache_dir)
    assert "truncated or corrupt" in message and archive.name in message


def test_error_tar_cut_between_members(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    """A plain tar cut at a member boundary must not load as a smaller dataset."""
    archive = kit.pack(files, tmp_path / "data.tar")
    with tarfile.open(archive) as tf:
        cut = tf.getmember("test/cat/000.png").offset  # header of the first test image
    archive.write_bytes(archive.read_bytes()[:cut])
    message = load_error(archive, cache_dir)
    assert "truncated or corrupt" in message and "end-of-archive marker" in message


def test_tar_with_dot_slash_names_and_directory_members(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    """What `tar -C tree -cf data.tar .` produces: './train/cat/000.png' and dir entries."""
    dotted = {f"./{rel}": data for rel, data in files.items()}
    archive = kit.pack(dotted, tmp_path / "data.tar", dirs=("./", "./train/", "./train/cat/"))
    arrays = ImageFolderSource(str(archive), cache_dir=str(cache_dir)).load()
    assert arrays.classes == ("cat", "dog", "frog") and len(arrays.train_images) == 12


def test_error_corrupt_zip_member(kit, tmp_path: Path, cache_dir: Path) -> None:
    """A flipped byte inside a member: the zip CRC catches it, it is not decoded as garbage."""
    data = kit.image_bytes((1, 2, 3))
    archive = kit.pack({"train/a/x.png": data, "test/a/y.png": data}, tmp_path / "data.zip")
    raw = bytearray(archive.read_bytes())
    at = raw.index(data) + len(data) // 2
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    assert "truncated or corrupt" in load_error(archive, cache_dir)


def test_error_missing_split(files, make_tree, cache_dir: Path) -> None:
    only_train = {k: v for k, v in files.items() if k.startswith("train/")}
    message = load_error(make_tree(only_train), cache_dir)
    assert "no test/ folder" in message and "found: train/" in message


def test_error_no_split_at_all(files, make_tree, cache_dir: Path) -> None:
    renamed = {k.replace("train/", "images/").replace("test/", "labels/"): v for k, v in files.items()}
    message = load_error(make_tree(renamed), cache_dir)
    assert "no train/ or test/ folder" in message and "images/" in message


def test_error_class_folders_differ(files, kit, make_tree, cache_dir: Path) -> None:
    files["train/bird/000.png"] = kit.image_bytes()
    files = {k: v for k, v in files.items() if not k.startswith("test/frog/")}
    message = load_error(make_tree(files), cache_dir)
    assert "class folders differ" in message
    assert "only in train/: ['bird', 'frog']" in message


def test_error_empty_class_folder(files, make_tree, cache_dir: Path) -> None:
    message = load_error(make_tree(files, dirs=("train/bird", "test/bird")), cache_dir)
    assert "'train/bird'" in message and "has no images" in message


def test_error_empty_class_folder_in_archive(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    archive = kit.pack(files, tmp_path / "data.zip", dirs=("train/bird/", "test/bird/"))
    assert "'train/bird'" in load_error(archive, cache_dir)


def test_error_file_outside_class_folder(files, kit, make_tree, cache_dir: Path) -> None:
    files["test/stray.png"] = kit.image_bytes()
    message = load_error(make_tree(files), cache_dir)
    assert "test/stray.png" in message and "not inside a class folder" in message


@pytest.mark.parametrize(
    "name, data",
    [("train/dog/notes.txt", b"hello"), ("test/cat/broken.png", None), ("train/frog/empty.jpg", b"")],
)
def test_error_file_is_not_an_image(files, kit, tmp_path, cache_dir, name: str, data: bytes | None) -> None:
    if data is None:  # a truncated PNG
        data = kit.image_bytes((9, 9, 9))[:60]
    files[name] = data
    archive = kit.pack(files, tmp_path / "data.tar.gz")
    message = load_error(archive, cache_dir)
    assert f"'{name}'" in message and "not a readable image" in message
    assert "BytesIO" not in message


def test_error_bad_on_size_mismatch(image_tree: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ImageFolderSource(str(image_tree), on_size_mismatch="crop")
    assert "data.source.on_size_mismatch='crop' must be one of: resize, error" in one_line_error(excinfo)


def test_error_bad_image_size(image_tree: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ImageFolderSource(str(image_tree), image_size=0)
    assert "image_size" in one_line_error(excinfo)


def test_constructor_does_no_io(tmp_path: Path) -> None:
    """Hydra builds sources while composing the config: a missing path must not fail there."""
    source = ImageFolderSource(str(tmp_path / "not-yet-there"), cache_dir=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    assert source.path.endswith("not-yet-there")


# ---- cache ---------------------------------------------------------------------------------------


def test_second_load_does_not_decode(any_source: Path, cache_dir: Path, monkeypatch) -> None:
    first = ImageFolderSource(str(any_source), cache_dir=str(cache_dir)).load()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_source, "decode_image", no_decoding)
    second = ImageFolderSource(str(any_source), cache_dir=str(cache_dir)).load()
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert first.classes == second.classes


def test_prepare_then_load_decodes_once(image_tree: Path, cache_dir: Path, count_decodes) -> None:
    source = ImageFolderSource(str(image_tree), cache_dir=str(cache_dir))
    source.prepare()
    decoded = count_decodes[0]
    source.load()
    source.prepare()
    assert decoded == 18 and count_decodes[0] == decoded


def test_changed_folder_is_decoded_again(image_tree: Path, kit, cache_dir: Path, count_decodes) -> None:
    source = ImageFolderSource(str(image_tree), cache_dir=str(cache_dir))
    assert len(source.load().train_images) == 12
    (image_tree / "train/cat/new.png").write_bytes(kit.image_bytes(kit.CLASS_COLORS["cat"]))
    assert len(source.load().train_images) == 13
    # Editing a file in place (same size, new mtime) also invalidates the cache.
    before = count_decodes[0]
    target = image_tree / "test/dog/000.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    source.load()
    assert count_decodes[0] == before + 19
    # ...but hidden files do not.
    (image_tree / ".DS_Store").write_bytes(b"x")
    source.load()
    assert count_decodes[0] == before + 19
    assert len(list(cache_dir.glob("*.npz"))) == 3  # one file per version of the source


def test_changed_archive_is_decoded_again(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    archive = kit.pack(files, tmp_path / "data.tar.gz")
    source = ImageFolderSource(str(archive), cache_dir=str(cache_dir))
    assert len(source.load().test_images) == 6
    files["test/cat/extra.png"] = kit.image_bytes(kit.CLASS_COLORS["cat"])
    kit.pack(files, archive)
    assert len(source.load().test_images) == 7


def test_image_size_is_part_of_the_cache_key(image_tree: Path, cache_dir: Path) -> None:
    assert ImageFolderSource(str(image_tree), cache_dir=str(cache_dir)).load().train_images.shape[1] == 32
    small = ImageFolderSource(str(image_tree), cache_dir=str(cache_dir), image_size=16).load()
    assert small.train_images.shape[1] == 16


@pytest.mark.floors
@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "wrong_keys", "bad_labels"])
def test_corrupt_cache_is_rebuilt_with_a_warning(image_tree, cache_dir, caplog, damage: str) -> None:
    source = ImageFolderSource(str(image_tree), cache_dir=str(cache_dir))
    reference = source.load()
    cache = source.cache_path()
    raw = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":  # inside the image data: only the zip CRC can tell
        damaged = bytearray(raw)
        damaged[len(raw) // 3] ^= 0xFF
        cache.write_bytes(bytes(damaged))
    elif damage == "garbage":
        cache.write_bytes(b"\x00" * 100)
    elif damage == "wrong_keys":
        np.savez(cache, something=np.zeros(3))
    else:  # structurally fine, but labels out of range
        with np.load(cache) as npz:
            data = dict(npz)
        data["train_labels"] = data["train_labels"] + 10
        with open(cache, "wb") as f:
            np.savez(f, **data)
    with caplog.at_level(logging.WARNING):
        rebuilt = source.load()
    assert any("unreadable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    np.testing.assert_array_equal(rebuilt.train_images, reference.train_images)
    np.testing.assert_array_equal(rebuilt.train_labels, reference.train_labels)
    assert load_arrays(cache) is not None  # rewritten, valid again


def test_cache_goes_to_cache_dir_and_nothing_next_to_the_source(image_tree: Path, cache_dir: Path, kit) -> None:
    before_tree, before_parent = kit.snapshot(image_tree), sorted(os.listdir(image_tree.parent))
    ImageFolderSource(str(image_tree), cache_dir=str(cache_dir)).load()
    assert kit.snapshot(image_tree) == before_tree
    assert sorted(os.listdir(image_tree.parent)) == sorted(before_parent + [cache_dir.name])
    [cached] = os.listdir(cache_dir)  # one file, no leftover temporary file
    assert cached.startswith("tree-") and cached.endswith(".npz")


def test_archive_source_writes_nothing_next_to_it(files, kit, tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "ro").mkdir()
    archive = kit.pack(files, tmp_path / "ro" / "data.tar.gz")
    before = kit.snapshot(tmp_path / "ro")
    ImageFolderSource(str(archive), cache_dir=str(cache_dir)).load()
    assert kit.snapshot(tmp_path / "ro") == before
    assert [p.name.startswith("data-") for p in cache_dir.iterdir()] == [True]


def test_default_cache_dir_resolution(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CIFAR_LAB_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CIFAR_LAB_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "cifar_lab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cifar_lab"


def test_default_cache_dir_is_used_when_none(image_tree: Path, _isolated_cache: Path) -> None:
    ImageFolderSource(str(image_tree)).load()
    assert len(list(_isolated_cache.glob("tree-*.npz"))) == 1


def test_cache_dir_inside_the_data_folder_is_rejected(image_tree: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ImageFolderSource(str(image_tree), cache_dir=str(image_tree / "cache")).load()
    assert "is inside the data folder" in one_line_error(excinfo)


def test_unwritable_cache_only_warns(image_tree: Path, tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        arrays = ImageFolderSource(str(image_tree), cache_dir=str(blocker / "cache")).load()
    assert len(arrays.train_images) == 12
    assert any("could not write the data cache" in r.getMessage() for r in caplog.records)


def test_cache_is_written_through_the_shared_atomic_helper(tmp_path: Path) -> None:
    """save_arrays goes through runtime.io.atomic_open: readable by all, no temp file left, and a
    write that fails midway leaves the previous file untouched."""
    from cifar_lab.runtime.io import atomic_open

    arrays = SyntheticSource(num_classes=2, train_per_class=3, test_per_class=2, image_size=8).load()
    target = tmp_path / "x.npz"
    save_arrays(target, arrays)
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="cut"), atomic_open(target) as f:
        f.write(b"half a cache")
        raise RuntimeError("cut")
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_save_and_load_arrays_roundtrip(tmp_path: Path) -> None:
    arrays = SyntheticSource(num_classes=2, train_per_class=3, test_per_class=2, image_size=8).load()
    save_arrays(tmp_path / "x.npz", arrays)
    back = load_arrays(tmp_path / "x.npz")
    assert back is not None and back.classes == arrays.classes
    np.testing.assert_array_equal(back.test_images, arrays.test_images)
    assert load_arrays(tmp_path / "absent.npz") is None


# ---- ImageArrays ---------------------------------------------------------------------------------


def _arrays(**overrides) -> ImageArrays:
    fields = dict(
        train_images=np.zeros((4, 8, 8, 3), np.uint8),
        train_labels=np.array([0, 1, 0, 1], np.int64),
        test_images=np.zeros((2, 8, 8, 3), np.uint8),
        test_labels=np.array([1, 0], np.int64),
        classes=("a", "b"),
    )
    return ImageArrays(**{**fields, **overrides})


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"train_images": np.zeros((4, 8, 8, 3), np.float32)}, "uint8"),
        ({"test_images": np.zeros((2, 8, 8), np.uint8)}, "(N, H, W, 3)"),
        ({"test_images": np.zeros((2, 9, 9, 3), np.uint8)}, "same image size"),
        ({"train_labels": np.array([0, 1, 0], np.int64)}, "shape (4,)"),
        ({"train_labels": np.array([0, 1, 0, 2], np.int64)}, "in [0, 2)"),
        ({"test_labels": np.array([1, 0], np.int32)}, "int64"),
        ({"classes": ("a", "a")}, "unique"),
        ({"classes": ["a", "b"]}, "tuple of str"),
    ],
)
def test_image_arrays_validation(overrides: dict, expected: str) -> None:
    with pytest.raises(DataError) as excinfo:
        _arrays(**overrides)
    assert expected in one_line_error(excinfo)


def test_image_arrays_repr_is_short() -> None:
    arrays = _arrays()
    assert arrays.num_classes == 2
    assert repr(arrays) == "ImageArrays(train=4, test=2, size=8x8, classes=['a', 'b'])"


# ---- torchvision CIFAR-10 (no network here: torchvision's class is mocked) -----------------------


class FakeCIFAR10:
    """Stands in for torchvision.datasets.CIFAR10: records calls, fails as configured."""

    calls: list[tuple[bool, bool]] = []
    fail_download: BaseException | None = None
    present = True

    def __init__(self, root, train=True, download=False) -> None:
        FakeCIFAR10.calls.append((train, download))
        if download and FakeCIFAR10.fail_download is not None:
            raise FakeCIFAR10.fail_download
        if download:
            FakeCIFAR10.present = True
        if not FakeCIFAR10.present:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = 50 if train else 10
        rng = np.random.default_rng(int(train))
        # Like torchvision: an (N, 32, 32, 3) uint8 *view* of a transposed array, a list of ints.
        self.data = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8).transpose(0, 2, 3, 1)
        self.targets = [i % 10 for i in range(n)]
        self.classes = list(CIFAR10_CLASSES)


@pytest.fixture
def fake_cifar(monkeypatch) -> type[FakeCIFAR10]:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR10)  # the same calls and failures
    monkeypatch.setattr(FakeCIFAR10, "calls", [])
    monkeypatch.setattr(FakeCIFAR10, "fail_download", None)
    monkeypatch.setattr(FakeCIFAR10, "present", True)
    return FakeCIFAR10


@pytest.mark.parametrize(
    ("source", "name"),
    [
        (TorchvisionCIFAR10(root="data", download=True), "CIFAR-10"),
        (TorchvisionCIFAR(root="data", download=True, dataset="cifar100"), "CIFAR-100"),
    ],
)
def test_torchvision_download_failure_is_a_one_line_hint(fake_cifar, source, name) -> None:
    fake_cifar.present = False
    fake_cifar.fail_download = urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    for action in (source.prepare, source.load):
        with pytest.raises(DataError) as excinfo:
            action()
        message = one_line_error(excinfo)
        assert message.startswith(f"could not download {name} into 'data' (")
        assert "Temporary failure in name resolution" in message
        assert "data=folder data.path=PATH" in message and "train/<class>/*" in message


def test_torchvision_absent_without_download(fake_cifar) -> None:
    fake_cifar.present = False
    with pytest.raises(DataError) as excinfo:
        TorchvisionCIFAR10(root="somewhere", download=False).load()
    message = one_line_error(excinfo)
    assert "'somewhere'" in message and "download is off" in message and "data=folder" in message
    assert all(not download for _, download in fake_cifar.calls)


def test_torchvision_absent_without_download_real_class(tmp_path: Path) -> None:
    """The real torchvision class, with download off, on an empty root (no network needed)."""
    with pytest.raises(DataError) as excinfo:
        TorchvisionCIFAR10(root=str(tmp_path / "cifar"), download=False).load()
    assert "download is off" in one_line_error(excinfo)


def test_torchvision_success(fake_cifar) -> None:
    arrays = TorchvisionCIFAR10(root="data").load()
    assert arrays.classes == tuple(CIFAR10_CLASSES)
    assert arrays.train_images.shape == (50, 32, 32, 3) and arrays.train_images.flags.c_contiguous
    assert arrays.test_images.shape == (10, 32, 32, 3) and arrays.test_images.dtype == np.uint8
    assert arrays.train_labels.dtype == np.int64 and arrays.train_labels[:12].tolist() == [*range(10), 0, 1]
    assert fake_cifar.calls == [(True, False), (False, False)]  # present: no download attempt


def test_torchvision_load_downloads_when_absent(fake_cifar) -> None:
    fake_cifar.present = False
    arrays = TorchvisionCIFAR10(root="data", download=True).load()
    assert len(arrays.train_images) == 50
    assert (True, True) in fake_cifar.calls and (False, True) in fake_cifar.calls


# ---- torchvision CIFAR-100: the real torchvision reader on a tiny copy in its own pickle format ---

FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]


def write_fake_cifar100(root: Path, monkeypatch, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` as the official pickles are laid out, with fine
    and coarse labels that differ, so a reader of the wrong ones fails. torchvision checks each
    file against the official md5, which a tiny copy cannot match: the md5 table (only) is set
    to these files'; the reading is torchvision's own."""
    import hashlib
    import pickle

    import torchvision.datasets

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = [c for c in range(100) for _ in range(per_class)]
        data = rng.integers(0, 256, (len(fine), 3 * 32 * 32), dtype=np.uint8)  # CHW rows, as the official files
        entry = {"data": data, "fine_labels": fine, "coarse_labels": [c // 5 for c in fine], "filenames": []}
        (folder / split).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": FINE_NAMES, "coarse_label_names": [f"coarse_{j}" for j in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    for name in ("train", "test", "meta"):
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    cifar100 = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cifar100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(cifar100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(cifar100, "meta", {**cifar100.meta, "md5": md5["meta"]})
    return root


def test_cifar100_reads_the_fine_labels_through_torchvision(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    root = write_fake_cifar100(tmp_path / "data", monkeypatch)
    source = TorchvisionCIFAR(root=str(root), download=False, dataset="cifar100")
    assert isinstance(source._dataset(True, download=False), torchvision.datasets.CIFAR100)
    arrays = source.load()
    assert arrays.classes == tuple(FINE_NAMES) and arrays.num_classes == 100
    assert arrays.train_images.shape == (200, 32, 32, 3) and arrays.test_images.shape == (100, 32, 32, 3)
    assert arrays.train_labels.tolist() == [c for c in range(100) for _ in range(2)]  # fine, not coarse


def test_cifar100_absent_without_download_real_class(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        TorchvisionCIFAR(root=str(tmp_path / "cifar"), download=False, dataset="cifar100").load()
    assert one_line_error(excinfo).startswith(f"CIFAR-100 is not in '{tmp_path / 'cifar'}'")


def test_torchvision_source_rejects_an_unknown_dataset() -> None:
    with pytest.raises(ConfigError) as excinfo:
        TorchvisionCIFAR(dataset="cifar1000")
    assert one_line_error(excinfo) == "data.source.dataset='cifar1000' must be one of: cifar10, cifar100"


def test_data_cifar100_composes_and_builds_the_torchvision_cifar100_datamodule(tmp_path: Path, monkeypatch) -> None:
    """`data=cifar100`, with download off on a root that holds a (tiny) CIFAR-100: 100 fine classes,
    normalized by the training split's own statistics, as data=cifar10."""
    from cifar_lab.training.build import build_datamodule
    from tests.conftest import compose_config

    root = write_fake_cifar100(tmp_path / "data", monkeypatch, train_per_class=3)
    cfg = compose_config(
        ["data=cifar100", f"paths.data_dir={root}", "data.source.download=false", "data.val_size=100"], tmp_path
    )
    assert cfg.data.source._target_ == "cifar_lab.data.sources.TorchvisionCIFAR"
    assert cfg.data.source.dataset == "cifar100" and cfg.data.mean is None and cfg.data.std is None
    datamodule = build_datamodule(cfg, stage="fit")
    assert datamodule.num_classes == 100 and datamodule.classes == tuple(FINE_NAMES)
    assert datamodule.num_train == 200  # 300 less a stratified 100 (one per class)
    train_images = datamodule._splits["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(datamodule.mean.numpy(), train_images.mean((0, 1, 2)), rtol=1e-5)


# ---- synthetic -----------------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism() -> None:
    a = SyntheticSource(num_classes=4, train_per_class=10, test_per_class=5, image_size=16, seed=3).load()
    b = SyntheticSource(num_classes=4, train_per_class=10, test_per_class=5, image_size=16, seed=3).load()
    c = SyntheticSource(num_classes=4, train_per_class=10, test_per_class=5, image_size=16, seed=4).load()
    assert a.train_images.shape == (40, 16, 16, 3) and a.test_images.shape == (20, 16, 16, 3)
    assert a.classes == ("class_0", "class_1", "class_2", "class_3")
    assert np.bincount(a.test_labels).tolist() == [5] * 4
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.train_images, c.train_images)
    # Test is its own stream, not a copy of the first training images.
    assert not np.array_equal(a.test_images[:5], a.train_images[:5])


def test_synthetic_is_learnable_but_not_trivial() -> None:
    arrays = SyntheticSource(seed=0).load()  # defaults: 10 classes, 100 / 20 per class
    train = arrays.train_images.reshape(len(arrays.train_images), -1).astype(np.float32)
    test = arrays.test_images.reshape(len(arrays.test_images), -1).astype(np.float32)
    means = np.stack([train[arrays.train_labels == c].mean(0) for c in range(arrays.num_classes)])
    distances = ((test[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (distances.argmin(1) == arrays.test_labels).mean()
    assert accuracy > 0.8  # a nearest-class-mean classifier learns it...
    # ...but samples of a class are far from identical, and not saturated to 0/255.
    same_class = train[arrays.train_labels == 0]
    assert same_class.std(0).mean() > 15
    assert 0.2 < (arrays.train_images > 127).mean() < 0.8


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError) as excinfo:
        SyntheticSource(train_per_class=0)
    assert "train_per_class" in one_line_error(excinfo)
    with pytest.raises(ConfigError):
        SyntheticSource(noise=-1.0)


# ---- the real data ------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"real data not available at {REAL_ARCHIVE}")
def test_real_cifar10_jpeg_archive(tmp_path: Path) -> None:
    start = time.perf_counter()
    source = ImageFolderSource(str(REAL_ARCHIVE), cache_dir=str(tmp_path / "cache"))
    arrays = source.load()
    decode_s = time.perf_counter() - start
    assert arrays.train_images.shape == (50000, 32, 32, 3)
    assert arrays.test_images.shape == (10000, 32, 32, 3)
    assert list(arrays.classes) == CIFAR10_CLASSES
    assert np.bincount(arrays.train_labels).tolist() == [5000] * 10
    assert np.bincount(arrays.test_labels).tolist() == [1000] * 10
    assert 100 < arrays.train_images.mean() < 150  # real pixels, not zeros
    start = time.perf_counter()
    again = source.load()
    cached_s = time.perf_counter() - start
    np.testing.assert_array_equal(again.test_images, arrays.test_images)
    print(f"decode {decode_s:.1f} s, cached load {cached_s:.2f} s")
