"""The run folder: where a run's files are, and what ``metrics.json`` says of it.

One home for the names a run leaves behind (``checkpoints/``, ``last.ckpt``, ``resume.ckpt``,
``metrics.json``, Hydra's ``.hydra/``, ``lr_find.json``, eval's ``confusion_matrix.png``): training, the failure handling,
eval, resume and the reports ask a :class:`RunFolder` instead of joining strings, so a name
cannot drift between the writer and its readers. ``metrics.json``'s statuses are one enum,
and the file has one writer and one reader (:meth:`RunFolder.write_metrics`,
:meth:`RunFolder.read_metrics`).

No torch, Lightning or Hydra here: config checks, ``cifar-lab report`` and the Hydra plugins
import it before (or without) the heavy libraries. ModelCheckpoint's folder stays config
(``callbacks.model_checkpoint.dirpath``, user-overridable); code that needs the run's own
checkpoints folder asks :attr:`RunFolder.checkpoints`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
LAST_FILE = "last.ckpt"  # ModelCheckpoint's save_last name (its CHECKPOINT_NAME_LAST + FILE_EXTENSION)
RESUME_FILE = "resume.ckpt"  # step and pre-emption saves (runtime.checkpoints.callback)
METRICS_FILE = "metrics.json"
LOG_FILE = "train.log"  # Hydra's job log of train.py (named after hydra.job.name)
HYDRA_DIR = ".hydra"  # Hydra's output_subdir, as conf/hydra leaves it
HYDRA_CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
LR_FIND_FILE = "lr_find.json"  # tune=lr_find's results (tasks.lr_find)
LR_FIND_PLOT = "lr_find.png"
CONFUSION_PLOT = "confusion_matrix.png"  # eval's figure of the test split (tasks.eval)


class RunStatus(str, Enum):
    """``metrics.json``'s ``status``: str-valued, so the JSON holds the same plain strings.

    Summaries store ``.value`` (a plain str), so logs and returned dicts read as before; a
    comparison works either way (``"completed" == RunStatus.COMPLETED``)."""

    COMPLETED = "completed"  # trained and tested (an early stop included)
    PRUNED = "pruned"  # a search trial Optuna stopped: no test pass
    INTERRUPTED = "interrupted"  # Lightning's own stop (trainer.interrupted)
    PREEMPTED = "preempted"  # SIGTERM/SIGINT (or SLURM's USR2): resume.ckpt saved, resumable
    FAILED = "failed"  # a NaN loss or a crash


class MetricsNotAnObject(ValueError):
    """``metrics.json`` parses, but as something other than a JSON object."""


@dataclass(frozen=True)
class RunFolder:
    """A run's output folder (``paths.output_dir``) and the paths of what is in it."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, cfg: Any) -> RunFolder:
        """The run folder of a composed config (``cfg.paths.output_dir``)."""
        return cls(Path(str(cfg.paths.output_dir)))

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_FILE

    @property
    def resume_checkpoint(self) -> Path:
        return self.checkpoints / RESUME_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def hydra_dir(self) -> Path:
        return self.root / HYDRA_DIR

    @property
    def hydra_config(self) -> Path:
        return self.hydra_dir / HYDRA_CONFIG_FILE

    @property
    def overrides(self) -> Path:
        return self.hydra_dir / OVERRIDES_FILE

    @property
    def lr_find(self) -> Path:
        return self.root / LR_FIND_FILE

    @property
    def lr_find_plot(self) -> Path:
        return self.root / LR_FIND_PLOT

    @property
    def confusion_plot(self) -> Path:
        return self.root / CONFUSION_PLOT

    def write_metrics(self, summary: dict[str, Any]) -> None:
        """Write ``metrics.json`` atomically (a reader sees the old file or the whole new one)."""
        from cifar_lab.runtime.io import write_json_atomic

        write_json_atomic(self.metrics, summary)

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` as a dict. Raises FileNotFoundError when there is none, OSError or
        ValueError when it cannot be read or parsed, MetricsNotAnObject when it is not an object."""
        data = json.loads(self.metrics.read_text())
        if not isinstance(data, dict):
            raise MetricsNotAnObject(f"{self.metrics} is not a JSON object")
        return data


def run_name(output_dir: str, log_dir: str) -> str:
    """A run's name in MLflow and W&B: its folder below the outputs root (``runs/train/<time>``,
    ``multiruns/train/<time>/3``: a sweep job's number alone would say little), else the folder's name."""
    folder, root = Path(output_dir).resolve(), Path(log_dir).resolve()
    if folder != root and folder.is_relative_to(root):
        return folder.relative_to(root).as_posix()
    return folder.name
