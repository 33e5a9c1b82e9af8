"""Faults and bad input end to end: one clear line each, no traceback, nothing half-written.

The data-source cases (missing/empty path, truncated or non-archive, differing class folders,
unreadable file, mixed sizes, empty class, corrupt cache) are unit-tested in
tests/data/test_sources.py; here they go through the whole training task.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_lab.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from cifar_lab.tasks.train import DiskFullError, train
from tests.conftest import REPO_ROOT, TINY_RUN

TINY = [*TINY_RUN, "logger=csv"]


def _outputs(run_dir: Path) -> set[str]:
    """What a run wrote besides Hydra's own files (config, log)."""
    if not run_dir.exists():
        return set()
    return {p.name for p in run_dir.iterdir() if p.name not in (".hydra", "train.log", "cache")}


@pytest.fixture
def nan_at_step(monkeypatch):
    """Make the training loss NaN from the given (1-based) training step on."""
    from torch import nn

    def arm(step: int) -> None:
        original = nn.CrossEntropyLoss.forward  # the module's training criterion (eval uses F.*)
        calls = {"n": 0}

        def forward(self, logits, labels):
            calls["n"] += 1
            loss = original(self, logits, labels)
            return loss * float("nan") if calls["n"] >= step else loss

        monkeypatch.setattr(nn.CrossEntropyLoss, "forward", forward)

    return arm


def test_nan_loss_stops_names_the_step_keeps_the_last_good_checkpoint(make_cfg, tmp_path, nan_at_step):
    nan_at_step(4)
    with pytest.raises(NonFiniteLossError) as err:
        train(make_cfg(*TINY, "checkpoint_every_n_steps=1"))
    message = str(err.value)
    assert "became nan at step 4" in message and "\n" not in message
    assert "last good checkpoint is" in message and "resume.ckpt" in message
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failed_step"] == 4 and "nan" in metrics["error"]
    kept = torch.load(tmp_path / "checkpoints" / "resume.ckpt", weights_only=True)
    assert kept["global_step"] == 3  # the step before the bad one
    assert all(torch.isfinite(t).all() for t in kept["state_dict"].values() if t.is_floating_point())
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_no_checkpoint_of_diverged_weights_is_written_weights_only_ones_included(make_cfg, tmp_path, nan_at_step):
    """Lightning skips callbacks' on_save_checkpoint for weights-only saves: the guard's check runs
    in the module's hook, which every save calls, so no file appears once a loss was NaN."""
    nan_at_step(4)
    every_step = [
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.save_last=false",
        "+callbacks.model_checkpoint.every_n_train_steps=1",
        "+callbacks.model_checkpoint.save_weights_only=true",
        "callbacks.model_checkpoint.filename='step{step}'",
    ]
    with pytest.raises(NonFiniteLossError, match="became nan at step 4"):
        train(make_cfg(*TINY, *every_step))
    written = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert written == ["step1.ckpt", "step2.ckpt", "step3.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "step3.ckpt", weights_only=True)
    assert "optimizer_states" not in last  # weights-only, as asked
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


def test_multirun_failed_job_keeps_the_other_jobs_results(tmp_path):
    """A diverging job (absurd lr) is marked failed; the sweep goes on and exits 0."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "data=synthetic",
            "trainer=cpu",
            "trainer.max_epochs=1",
            *TINY,
            "callbacks.rich_progress_bar=null",
            "callbacks.rich_model_summary=null",
            "optimizer.lr=1e30,0.05",
            "scheduler=none",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failed, completed = (json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1))
    assert failed["status"] == "failed" and failed["failed_step"] >= 1
    assert completed["status"] == "completed" and completed["test/acc"] > 0
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from tests.conftest import FAST_OVERRIDES, compose_config

    run_dir = tmp_path_factory.mktemp("tiny_ckpt")
    train(compose_config(FAST_OVERRIDES + TINY + ["data.val_size=0"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=seed_cnn"], "it holds a FastNet, this run builds a SeedCNN"),
        (["data.source.num_classes=5"], "it was trained on 10 classes, this data has 5"),
        (["model.widths=[8,16,32]"], "has shape"),
        (["data.batch_size=20"], "data.batch_size=30"),
    ],
)
def test_checkpoint_from_another_model_or_class_count(make_cfg, tmp_path, tiny_checkpoint, overrides, expected):
    base = [o for o in TINY if not o.startswith("model")] if overrides[0].startswith("model=") else TINY
    with pytest.raises(CheckpointError, match="does not fit this run") as err:
        train(make_cfg(*base, *overrides, f"ckpt_path={tiny_checkpoint}"))
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert _outputs(tmp_path) == set()  # refused before any output


def test_truncated_checkpoint_is_one_line(make_cfg, tmp_path, tiny_checkpoint):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train(make_cfg(*TINY, f"ckpt_path={cut}"))
    assert _outputs(tmp_path) == {"cut.ckpt"}


def test_disk_full_while_writing_outputs(make_cfg, tmp_path, monkeypatch):
    import cifar_lab.runtime.io as io_mod

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_mod.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="the disk is full") as err:
        train(make_cfg(*TINY))
    assert "\n" not in str(err.value)
    # the atomic writes left neither a torn file nor a temp file behind
    assert not (tmp_path / "metrics.json").exists()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.suffix in (".ckpt", ".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (["optimizer.lr=fast"], ConfigError, "optimizer.lr='fast' must be a positive number"),
        (["data.batch_size=0"], ConfigError, "data.batch_size=0 must be a positive integer"),
        (["resume=yes"], ConfigError, "resume='yes' must be null or 'latest'"),
        (["checkpoint_every_n_steps=-1"], ConfigError, "checkpoint_every_n_steps=-1"),
        (["resume=latest", "ckpt_path=train.py"], ConfigError, "not both"),
    ],
)
def test_bad_config_values(make_cfg, tmp_path, overrides, error, expected):
    with pytest.raises(error) as err:
        train(make_cfg(*overrides))
    assert expected in str(err.value)
    assert _outputs(tmp_path) == set()


def _bad_source(folder: Path, case: str) -> Path:
    from tests.data.conftest import image_bytes, pack, standard_files

    folder.mkdir()
    files = standard_files()
    if case == "not an archive":
        (folder / "data.tar.gz").write_bytes(b"this is no gzip")
        return folder / "data.tar.gz"
    if case == "truncated":
        full = pack(files, folder / "full.tar").read_bytes()
        (folder / "full.tar").unlink()
        (folder / "cut.tar").write_bytes(full[:3000])
        return folder / "cut.tar"
    if case == "class folders differ":
        return pack({**files, "train/bird/0.png": image_bytes()}, folder / "differ.zip")
    if case == "empty class":
        return pack(files, folder / "empty.tar", dirs=("train/bird", "test/bird"))
    return pack({**files, "train/cat/notes.png": b"hello"}, folder / "bad.zip")


@pytest.mark.parametrize("case", ["not an archive", "truncated", "class folders differ", "empty class", "not an image"])
def test_bad_data_through_training_leaves_no_outputs(make_cfg, tmp_path, case):
    source = _bad_source(tmp_path / "src", case)
    with pytest.raises(DataError) as err:
        train(make_cfg("data=folder", f"data.path={source}", "data.val_size=2"))
    message = str(err.value)
    assert "\n" not in message and source.name in message
    if case == "not an image":
        assert "train/cat/notes.png" in message  # names the file
    assert _outputs(tmp_path) == {"src"}
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=resnet50"], "Available options in 'model'"),
        (["optimizer=adam"], "Available options in 'optimizer'"),
        (
            ["data=folder", "data.path=/nonexistent/cifar.tar"],
            "error: data.path='/nonexistent/cifar.tar' does not exist",
        ),
        (["optimizer.lr=-0.1"], "error: optimizer.lr=-0.1 must be a positive number"),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, args, expected):
    result = subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert _outputs(tmp_path / "run") == set()


def test_corrupt_cache_is_rebuilt_in_a_training_run(make_cfg, tmp_path):
    """The decoded-data cache is written atomically; a damaged one is rebuilt, not trusted."""
    from tests.data.conftest import pack, standard_files

    source = pack(standard_files(), tmp_path / "tiny.tar")
    cfg = make_cfg(
        "data=folder", f"data.path={source}", "data.val_size=2", "data.batch_size=4", "debug=default", "model=seed_cnn"
    )
    train(cfg)
    caches = list((tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 1 and not list((tmp_path / "cache").glob(".*.tmp"))
    caches[0].write_bytes(caches[0].read_bytes()[:200])  # torn
    summary = train(cfg)
    assert summary["status"] == "completed"
    assert caches[0].stat().st_size > 200  # rebuilt


# -- point 9, still: a cut checkpoint or a non-archive is one short line, at every entry point --------
def _one_short_error_line(result: subprocess.CompletedProcess, value: str, tmp_path: Path) -> str:
    """The command's whole stderr is one ``error:`` line naming ``value``, exit status 2; the
    line is short (<200 characters) but for the test's own temp folder, which is the user's path."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert value in lines[0]
    assert len(lines[0].replace(str(tmp_path), "<tmp>")) < 200, lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("entry", "kept"),
    [
        # torch fails in two ways, by where the cut falls: "[Errno 22] Invalid argument", or a
        # 250-character paragraph on its zip reader (in this small file: the last tenth cut off)
        ("train ckpt_path", 0.5),
        ("train ckpt_path", 0.9),
        ("train resume=latest", 0.9),
        ("eval", 0.9),
        ("predict", 0.9),
    ],
)
def test_a_cut_checkpoint_is_one_short_line_at_every_entry_point(tmp_path, tiny_checkpoint, entry, kept):
    from PIL import Image

    run_dir = tmp_path / "run"
    cut = run_dir / "checkpoints" / "last.ckpt"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(tiny_checkpoint.read_bytes()[: int(tiny_checkpoint.stat().st_size * kept)])
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    train = [sys.executable, str(REPO_ROOT / "train.py"), "data=synthetic", "trainer=cpu"]
    command = {
        "train ckpt_path": [*train, f"ckpt_path={cut}", f"hydra.run.dir={tmp_path / 'other'}"],
        "train resume=latest": [*train, "resume=latest", f"hydra.run.dir={run_dir}"],
        "eval": [sys.executable, str(REPO_ROOT / "eval.py"), f"ckpt_path={cut}", f"hydra.run.dir={tmp_path / 'other'}"],
        "predict": [sys.executable, "-m", "cifar_lab.tasks.cli", "predict", "--ckpt", str(cut), "cat.png"],
    }[entry]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = _one_short_error_line(result, str(cut), tmp_path)
    assert "is truncated or corrupt" in line
    assert not (tmp_path / "other" / "metrics.json").exists()


@pytest.mark.parametrize("name", ["data.tar.gz", "data.zip"])
def test_a_file_that_is_not_an_archive_is_one_short_line(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is no archive")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "data=folder", f"data.path={name}", "hydra.run.dir=run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = _one_short_error_line(result, f"'{name}'", tmp_path)
    assert "could not read archive" in line and "download or create it again" in line
    assert _outputs(tmp_path / "run") == set()
