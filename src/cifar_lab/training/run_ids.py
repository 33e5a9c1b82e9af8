"""RunIds: the callback that writes the loggers' run ids into every checkpoint.

Apart from cifar_lab.training.loggers so that the config checks there load without Lightning.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from cifar_lab.training.loggers import RESUME_ARGUMENT, RUN_IDS_KEY


class RunIds(pl.Callback):
    """checkpoint[RUN_IDS_KEY] = {config name: {"logger": class name, "version": run id}} for the
    loggers whose run lives outside the run folder (MLflow, W&B): what a resumed run hands back
    to their constructors (``training.loggers.continue_runs``)."""

    def __init__(self, loggers: dict[str, Any]) -> None:
        self.loggers = loggers

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not trainer.is_global_zero:  # the loggers' runs exist on rank 0 only (and it writes the file)
            return
        runs = {}
        for name, logger in self.loggers.items():
            cls = type(logger).__name__
            if cls in RESUME_ARGUMENT and isinstance(logger.version, str) and logger.version:
                runs[name] = {"logger": cls, "version": logger.version}
        if runs:
            checkpoint[RUN_IDS_KEY] = runs
