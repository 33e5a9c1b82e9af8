"""Security: crafted archives write nothing, crafted checkpoints run nothing, downloads are
checksum-verified, and run outputs name no user folders."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from cifar_lab.data.sources import ImageFolderSource, TorchvisionCIFAR10
from cifar_lab.errors import CheckpointError, DataError
from cifar_lab.runtime.checkpoints.files import SafeCheckpointIO, load_checkpoint
from cifar_lab.tasks.train import train
from tests.conftest import TINY_RUN
from tests.data.conftest import image_bytes, pack, standard_files

TINY = [*TINY_RUN, "logger=tensorboard"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- archives ----------------------------------------------------------------------------------


def _crafted_tar(path: Path, outside: Path) -> Path:
    """The standard tree plus members that would escape or misbehave if extracted."""
    with tarfile.open(path, "w") as tf:
        for name, data in standard_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        evil = image_bytes((1, 2, 3))

        def add_file(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(evil)
            tf.addfile(info, io.BytesIO(evil))

        def add_special(name: str, kind: bytes, linkname: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            info.devmajor, info.devminor = 1, 3  # /dev/null's numbers, for the device entries
            tf.addfile(info)

        add_file("../evil.png")  # path traversal
        add_file(str(outside / "absolute.png"))  # absolute path
        add_special("train/cat/symlink.png", tarfile.SYMTYPE, str(outside / "symlinked.png"))
        add_special("train/cat/uplink.png", tarfile.SYMTYPE, "../../../outside/uplinked.png")
        add_special("train/cat/hardlink.png", tarfile.LNKTYPE, "/etc/passwd")
        add_special("train/cat/device.png", tarfile.CHRTYPE)
        add_special("train/cat/block.png", tarfile.BLKTYPE)
        add_special("train/cat/fifo.png", tarfile.FIFOTYPE)
    return path


def test_crafted_tar_members_are_ignored_and_nothing_is_written(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "data").mkdir()
    archive = _crafted_tar(tmp_path / "data" / "crafted.tar", outside)
    # the standard library's extraction filter would refuse this archive: it is really hostile
    with tarfile.open(archive) as tf, pytest.raises(tarfile.FilterError):
        for member in tf.getmembers():
            tarfile.data_filter(member, str(tmp_path / "extract"))
    before = _tree(tmp_path)

    arrays = ImageFolderSource(str(archive), cache_dir=str(tmp_path / "cache")).load()

    # only the regular members under train/<class>/ and test/<class>/ became images
    assert len(arrays.train_images) == 12 and len(arrays.test_images) == 6
    assert arrays.classes == ("cat", "dog", "frog")
    created = _tree(tmp_path) - before
    assert all(p.startswith("cache") for p in created), created  # the decoded cache, nothing else
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "data" / "evil.png").exists()


def test_crafted_zip_members_are_ignored_or_rejected_and_nothing_is_written(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = pack(standard_files(), tmp_path / "crafted.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../evil.png", image_bytes())
        zf.writestr(str(outside / "absolute.png"), image_bytes())
    before = _tree(tmp_path)
    arrays = ImageFolderSource(str(archive), cache_dir=str(tmp_path / "cache")).load()
    assert len(arrays.train_images) == 12  # traversal and absolute members ignored
    assert all(p.startswith("cache") for p in _tree(tmp_path) - before)

    # a zip "symlink" (unix mode S_IFLNK): its bytes are a path, not an image -> named, rejected
    linked = pack(standard_files(), tmp_path / "link.zip")
    with zipfile.ZipFile(linked, "a") as zf:
        info = zipfile.ZipInfo("train/cat/link.png")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, str(outside / "target.png"))
    with pytest.raises(DataError, match="'train/cat/link.png' .* is not a readable image"):
        ImageFolderSource(str(linked), cache_dir=str(tmp_path / "cache2")).load()
    assert list(outside.iterdir()) == []


def test_traversal_inside_a_class_folder_is_only_read_in_memory(tmp_path):
    """'train/cat/../../../x.png' is a member name, not a path: read into memory, never written."""
    files = {**standard_files(), "train/cat/../../../escaped.png": image_bytes((200, 30, 30))}
    archive = pack(files, tmp_path / "dots.tar")
    before = _tree(tmp_path)
    ImageFolderSource(str(archive), cache_dir=str(tmp_path / "cache")).load()
    assert all(p.startswith("cache") for p in _tree(tmp_path) - before)
    assert not (tmp_path.parent / "escaped.png").exists()


# ---- checkpoints -------------------------------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: the classic code-execution-on-load payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    from tests.conftest import FAST_OVERRIDES, compose_config

    run_dir = tmp_path_factory.mktemp("ckpt_run")
    train(compose_config(FAST_OVERRIDES + TINY, run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def test_the_payload_is_real(tmp_path):
    """Control: with plain unpickling the payload does run (so the tests below mean something)."""
    marker = tmp_path / "control"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.ckpt")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists()


def test_pickle_payload_in_a_checkpoint_never_runs(make_cfg, tmp_path, real_checkpoint):
    marker = tmp_path / "pwned"
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, bare)
    # a genuine checkpoint with a payload hidden in its hyper-parameters
    hidden = tmp_path / "hidden.ckpt"
    checkpoint = torch.load(real_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["extra"] = Payload(marker)
    torch.save(checkpoint, hidden)

    for path in (bare, hidden):
        with pytest.raises(CheckpointError, match="allow-list") as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value)
        # Lightning's own load path, even when asked for full unpickling
        with pytest.raises(CheckpointError):
            SafeCheckpointIO().load_checkpoint(path, weights_only=False)
        # the training task: ckpt_path=..., and resume=latest finding it in the run folder
        with pytest.raises(CheckpointError):
            train(make_cfg(*TINY, f"ckpt_path={path}"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(hidden.read_bytes())
    with pytest.raises(CheckpointError):
        train(make_cfg(*TINY, "resume=latest"))
    assert not marker.exists()


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails midway leaves the previous checkpoint intact and no temp file."""
    import cifar_lab.runtime.io as io_mod

    io = SafeCheckpointIO(tmp_path)
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    def torn_write(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(io_mod.os, "fsync", torn_write)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_outputs_name_no_user_folders(real_checkpoint, monkeypatch):
    """Checkpoints, metrics.json and TensorBoard files hold no absolute path of the machine."""
    run_dir = real_checkpoint.parent.parent
    forbidden = {str(run_dir), str(run_dir.resolve()), str(Path.home()), os.getcwd()}
    files = [p for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.name != "train.log"]
    assert any(p.suffix == ".ckpt" for p in files) and any("tfevents" in p.name for p in files)
    for path in files:
        data = path.read_bytes()
        for text in forbidden:
            assert text.encode() not in data, f"{path.relative_to(run_dir)} contains {text}"
    # yet a resumed run still knows where its best checkpoint is
    loaded = load_checkpoint(real_checkpoint)
    states = [v for k, v in loaded["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert states and Path(states[0]["best_model_path"]).parent == real_checkpoint.parent.resolve()


# ---- downloads ---------------------------------------------------------------------------------


def test_download_with_a_wrong_checksum_is_refused_and_not_extracted(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def fake_download(url, filename, *args, **kwargs):
        Path(filename).write_bytes(b"not the CIFAR-10 archive")  # e.g. a captive portal page

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", fake_download)
    root = tmp_path / "cifar"
    with pytest.raises(DataError, match="could not download CIFAR-10") as err:
        TorchvisionCIFAR10(root=str(root), download=True).prepare()
    assert "corrupted" in str(err.value)
    assert not (root / "cifar-10-batches-py").exists()  # nothing was extracted from it
