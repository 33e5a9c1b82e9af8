"""The job side of pruning: report each epoch's validation accuracy to the job's trial and
stop the run at the epoch the pruner says is hopeless.

The job only reports and marks itself pruned (the ``pruned_epoch`` user attribute); the
sweeper, which owns the trial's final state, then tells Optuna PRUNED.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig

from cifar_lab.search import require_optuna
from cifar_lab.search.study import PRUNED_ATTR, TRIAL_KEY, make_pruner, storage_url, trial_id

log = logging.getLogger(__name__)


class TrialPruning(pl.Callback):
    """After each validation epoch: ``trial.report(monitor, epoch)``, then stop training
    (``trainer.should_stop``: the epoch ends cleanly) when ``trial.should_prune()``."""

    def __init__(self, trial: Any, monitor: str = "val/acc") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        epoch = trainer.current_epoch + 1  # epochs trained so far, as metrics.json counts them
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self.trial.report(float(value), step=epoch)
                prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_epoch = epoch
            trainer.should_stop = True
            if trainer.is_global_zero:
                self.trial.set_user_attr(PRUNED_ATTR, epoch)
                log.info(
                    "trial %d pruned after epoch %d (%s below the pruner's bar)", self.trial.number, epoch, self.monitor
                )


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """The pruning callback of a search job (one whose config has ``optuna_trial``), else None."""
    number = cfg.get(TRIAL_KEY)
    if number is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    optuna = require_optuna()
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    url = storage_url(sweeper.storage, hydra_cfg.runtime.cwd or Path.cwd())
    pruner = make_pruner(sweeper.get("pruner"), sweeper.get("pruner_options"))
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
    trial = optuna.trial.Trial(study, trial_id(storage, sweeper.study_name, int(number)))
    return TrialPruning(trial, str(sweeper.get("pruning_metric") or "val/acc"))
