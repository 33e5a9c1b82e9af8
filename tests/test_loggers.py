"""MLflow and W&B as first-class loggers: the summary, the test figures and resume continuity,
read back with each library's own client (MlflowClient; W&B's offline run files and records)."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cifar_lab.errors import ConfigError
from cifar_lab.tasks.train import train
from cifar_lab.training.loggers import RUN_IDS_KEY
from tests.conftest import REPO_ROOT, TINY_RUN

# one epoch of 6 steps, then a resume that trains a second one (no progress bar or summary to draw)
QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
RUN = [*TINY_RUN, *QUIET, "trainer.max_epochs=1"]
RESUMED = [*TINY_RUN, *QUIET, "resume=latest", "trainer.max_epochs=2"]
# a small mistakes grid: drawing 32 images costs seconds
LOGGERS = ["logger=[tensorboard,mlflow,wandb]", "callbacks.test_predictions.num_misclassified=4"]


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline and quiet, its settings and caches in the test's folder: no network, no home files."""
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
        "WANDB_DIR": str(tmp_path / "wandb_dir"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
    }.items():
        monkeypatch.setenv(key, value)


# -- MLflow and W&B, with TensorBoard beside them ----------------------------------------------
def test_mlflow_and_wandb_get_config_final_metrics_and_figures_and_a_resume_continues_their_runs(make_cfg, tmp_path):
    """One run, then a resume that trains a second epoch, logging to all three at once."""
    first = train(make_cfg(*RUN, *LOGGERS))
    second = train(make_cfg(*RESUMED, *LOGGERS))
    assert second["resumed"] and second["steps"] == 2 * first["steps"]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)[RUN_IDS_KEY]
    assert sorted(saved) == ["mlflow", "wandb"]  # TensorBoard's run is its folder

    _check_mlflow(tmp_path, first, second, saved["mlflow"])
    _check_wandb(tmp_path, first, second, saved["wandb"])
    # TensorBoard beside them still gets its figures and hparams tab
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"test/confusion_matrix", "test/most_confident_mistakes"} <= set(events.Tags()["images"])


def _check_mlflow(tmp_path: Path, first: dict, second: dict, saved: dict) -> None:
    from mlflow import MlflowClient

    store = tmp_path / "mlflow" / "mlflow.db"  # the default: one store under paths.log_dir
    assert store.is_file()
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("train")  # task_name
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "the resumed run must continue the same MLflow run"
    run = runs[0]
    assert run.info.run_name == tmp_path.name and run.info.status == "FINISHED"
    assert saved == {"logger": "MLFlowLogger", "version": run.info.run_id}

    # the config as params: first logged by the first run; what the resume changed, as tags
    params, tags = run.data.params, run.data.tags
    assert params["optimizer/lr"] == "0.1" and params["model/widths"] == "[8, 16, 16]"
    assert params["resume"] == "None" and params["trainer/max_epochs"] == "1"
    assert tags["resumed/resume"] == "latest" and tags["resumed/trainer/max_epochs"] == "2"

    # the final metrics at each run's last step; the curves go on from the first run's
    history = client.get_metric_history(run.info.run_id, "test/acc")
    assert [(m.step, m.value) for m in history][-1] == (second["steps"], pytest.approx(second["test/acc"]))
    assert first["steps"] in [m.step for m in history]
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    # each part: its epoch's point and its summary's; the resumed part goes on where the first stopped
    assert loss_steps == [first["steps"] - 1, first["steps"], second["steps"] - 1, second["steps"]]
    assert run.data.metrics["train_time_s"] == pytest.approx(second["train_time_s"])

    # the test figures as artifacts, beside the store
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert figures == {"test/confusion_matrix.png", "test/most_confident_mistakes.png"}
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").as_uri())


# -- reading W&B offline runs --------------------------------------------------------------------------
def _records(path: Path) -> Iterator:
    """The records of a W&B run file (run-<id>.wandb): W&B's protobuf Records in LevelDB's log
    format (32 KiB blocks of chunks, each a 7-byte header: crc32, length, type) after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _offline_run(folder: Path) -> dict:
    """run id, project, name, config and final summary of one offline-run-* folder."""
    import json

    (file,) = folder.glob("run-*.wandb")

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    run: dict = {"config": {}, "summary": {}, "history": []}
    for record in _records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, project=record.run.project, name=record.run.display_name)
        elif kind == "config":
            run["config"].update({key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            run["summary"].update({key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            run["history"].append({key(item): json.loads(item.value_json) for item in record.history.item})
    return run


def _check_wandb(tmp_path: Path, first: dict, second: dict, saved: dict) -> None:
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))  # in the run folder, offline
    assert len(folders) == 2, folders  # W&B writes a resumed offline run as a second part
    runs = [_offline_run(folder) for folder in folders]
    assert runs[0]["id"] == runs[1]["id"] and folders[1].name.endswith(runs[0]["id"])
    assert runs[0]["project"] == "train" and runs[0]["name"] == tmp_path.name
    assert saved == {"logger": "WandbLogger", "version": runs[0]["id"]}

    for run, summary in zip(runs, (first, second)):
        assert run["config"]["optimizer"]["lr"] == 0.1  # the config, nested
        assert run["summary"]["test/acc"] == pytest.approx(summary["test/acc"])
        assert run["summary"]["trainer/global_step"] == summary["steps"]
        figures = {k.split("/_type")[0] for k in run["summary"]}
        assert {"test/confusion_matrix", "test/most_confident_mistakes"} <= figures
    assert runs[1]["config"]["resume"] == "latest" and runs[1]["config"]["trainer"]["max_epochs"] == 2
    # the resumed part's curves go on at the steps after the first part's
    steps = [row["trainer/global_step"] for row in runs[1]["history"] if "train/loss" in row]
    assert steps == [second["steps"] - 1, second["steps"]]  # its epoch's point, its summary's
    media = list((folders[1] / "files" / "media" / "images" / "test").glob("confusion_matrix_*.png"))
    assert len(media) == 1 and media[0].stat().st_size > 0


# -- extras -------------------------------------------------------------------------------------
def test_a_missing_extra_is_one_line_before_torch_loads(tmp_path):
    """As if mlflow were not installed (None in sys.modules: Python's own 'not importable')."""
    code = (
        "import runpy, sys; sys.modules['mlflow'] = None; "
        f"sys.argv = ['train.py', 'logger=mlflow', 'paths.log_dir={tmp_path}/out']; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: logger=mlflow needs the mlflow extra: pip install 'cifar_lab[mlflow]'"]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "cifar_lab" in imported and not imported & {"torch", "lightning", "wandb"}


def test_a_missing_wandb_or_sqlite_store_names_the_extra(make_cfg, monkeypatch):
    from cifar_lab.config.check import validate_config

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"^logger=wandb needs the wandb extra: pip install 'cifar_lab\[wandb\]'$"):
        validate_config(make_cfg("logger=[tensorboard,wandb]"))
    monkeypatch.setitem(sys.modules, "alembic", None)  # mlflow-skinny alone: no sqlite store
    with pytest.raises(ConfigError, match=r"needs the mlflow extra: .*\(alembic not installed\)$"):
        validate_config(make_cfg("logger=mlflow"))
    validate_config(make_cfg("logger=mlflow", "logger.mlflow.tracking_uri=http://localhost:5000"))  # a server


def test_the_logger_code_of_a_tensorboard_run_imports_neither_mlflow_nor_wandb(tmp_path):
    """What a TensorBoard (+ CSV) run calls of the logger modules, in a fresh interpreter: build,
    record run ids, draw a figure, write the summary, close (a whole run: tests/test_train.py)."""
    code = f"""
import sys
from omegaconf import OmegaConf
from cifar_lab.runtime.figures import new_figure
from cifar_lab.training.loggers import build_loggers
from cifar_lab.training.publish import close_loggers, figure_loggers, publish_figure, publish_summary
entries = {{name: OmegaConf.load(f"conf/logger/{{name}}.yaml")[name] for name in ("tensorboard", "csv")}}
cfg = OmegaConf.create({{"paths": {{"output_dir": "{tmp_path}"}}, "logger": entries, "seed": 0}})
loggers, named = build_loggers(cfg, {{"global_step": 3}})
from cifar_lab.training.run_ids import RunIds
RunIds(named)
publish_figure(figure_loggers(loggers), "test/figure", new_figure(2, 2), 3)
publish_summary(loggers, cfg, {{"test/acc": 0.5, "train_time_s": 1.0, "steps": 3}})
close_loggers(loggers, success=True)
print(len(loggers), sorted({{"mlflow", "wandb"}} & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "2 []"
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[-1].startswith("3,")  # the summary's step


def test_a_run_is_named_after_its_folder_below_the_outputs_root(tmp_path):
    from cifar_lab.runtime.run_folder import run_name

    root = tmp_path / "outputs"
    assert run_name(str(root / "multiruns" / "train" / "t0" / "3"), str(root)) == "multiruns/train/t0/3"
    assert run_name(str(root / "runs" / "train" / "t1"), "outputs-elsewhere") == "t1"  # not below it
    assert run_name(str(root), str(root)) == "outputs"
