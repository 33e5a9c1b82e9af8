"""The run folder owns its paths and metrics.json's statuses (runtime.run_folder), and stays the only owner."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cifar_lab.runtime.run_folder import (
    CHECKPOINTS_DIR,
    CONFUSION_PLOT,
    HYDRA_CONFIG_FILE,
    HYDRA_DIR,
    LAST_FILE,
    LOG_FILE,
    LR_FIND_FILE,
    LR_FIND_PLOT,
    METRICS_FILE,
    OVERRIDES_FILE,
    RESUME_FILE,
    MetricsNotAnObject,
    RunFolder,
    RunStatus,
)
from tests.conftest import FAST_OVERRIDES, REPO_ROOT, compose_config

# the names only run_folder.py may spell out
OWNED_NAMES = {
    CHECKPOINTS_DIR,
    LAST_FILE,
    RESUME_FILE,
    METRICS_FILE,
    LOG_FILE,
    HYDRA_DIR,
    HYDRA_CONFIG_FILE,
    OVERRIDES_FILE,
    LR_FIND_FILE,
    LR_FIND_PLOT,
    CONFUSION_PLOT,
}
SOURCES = REPO_ROOT / "src"


@pytest.mark.parametrize("status", list(RunStatus))
def test_each_status_round_trips_through_metrics_json_as_its_plain_string(tmp_path, status):
    folder = RunFolder(tmp_path / "run")
    folder.write_metrics({"status": status, "steps": 3})
    text = folder.metrics.read_text()
    assert f'"status": "{status.value}"' in text  # the plain string: readers need not know the enum
    folder.write_metrics({"status": status.value, "steps": 3})
    assert folder.metrics.read_text() == text  # the member and its value write the same bytes
    read = folder.read_metrics()
    assert RunStatus(read["status"]) is status and read["status"] == status and read["steps"] == 3


def test_the_statuses_are_the_strings_metrics_json_has_always_held():
    assert {s.value for s in RunStatus} == {"completed", "pruned", "interrupted", "preempted", "failed"}


def test_read_metrics_says_which_way_a_file_is_unusable(tmp_path):
    folder = RunFolder(tmp_path)
    with pytest.raises(FileNotFoundError):
        folder.read_metrics()
    folder.metrics.write_text("[1, 2]")
    with pytest.raises(MetricsNotAnObject):
        folder.read_metrics()
    folder.metrics.write_text('{"status": ')
    with pytest.raises(json.JSONDecodeError):
        folder.read_metrics()


def test_the_paths_are_those_of_the_run_folder(tmp_path):
    folder = RunFolder(str(tmp_path))  # a str is taken as a path
    assert folder.root == tmp_path
    assert folder.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert folder.resume_checkpoint == tmp_path / "checkpoints" / "resume.ckpt"
    assert folder.metrics == tmp_path / "metrics.json"
    assert folder.overrides == tmp_path / ".hydra" / "overrides.yaml"
    assert folder.hydra_config == tmp_path / ".hydra" / "config.yaml"
    assert (folder.log, folder.lr_find, folder.lr_find_plot, folder.confusion_plot) == (
        tmp_path / "train.log",
        tmp_path / "lr_find.json",
        tmp_path / "lr_find.png",
        tmp_path / "confusion_matrix.png",
    )


def test_the_config_and_lightning_name_the_same_folders(tmp_path):
    """ModelCheckpoint's default folder, its last-checkpoint name and Hydra's subfolder agree with
    RunFolder: the config stays overridable, but out of the box both say the same."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = compose_config(FAST_OVERRIDES, tmp_path)
    folder = RunFolder.of(cfg)
    assert Path(cfg.callbacks.model_checkpoint.dirpath) == folder.checkpoints == tmp_path / CHECKPOINTS_DIR
    assert f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}" == LAST_FILE
    assert cfg.hydra.output_subdir == HYDRA_DIR


def _hand_built_paths(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """String constants in ``path`` that are a run-folder path (``"metrics.json"``,
    ``"checkpoints/last.ckpt"``): prose that mentions one (a docstring, a message) is not."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " not in node.value:
            parts = [p for p in node.value.split("/") if p]
            if parts and any(part in OWNED_NAMES for part in parts):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_no_code_outside_run_folder_spells_a_run_folder_path():
    owner = SOURCES / "cifar_lab" / "runtime" / "run_folder.py"
    files = [p for p in sorted(SOURCES.rglob("*.py")) if p != owner]
    assert len(files) > 50  # both packages: src/cifar_lab and src/hydra_plugins
    offenders = [hit for p in files for hit in _hand_built_paths(p)]
    assert offenders == [], "use cifar_lab.runtime.run_folder instead:\n" + "\n".join(offenders)


def test_the_check_finds_a_hand_built_path(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        '"""Writes metrics.json."""\n'
        'a = out / "metrics.json"\n'
        'b = out / "checkpoints/resume.ckpt"\n'
        'c = f"{out}/checkpoints"\n'
        'd = "no metrics.json here"\n'
    )
    hits = sorted(h.split(": ", 1)[1] for h in _hand_built_paths(module, tmp_path))
    assert hits == sorted(["'metrics.json'", "'checkpoints/resume.ckpt'", "'/checkpoints'"])
