"""The run's pieces from the config: data, module, loggers, callbacks, trainer.

Everything is built by Hydra's ``instantiate`` (through ``instantiate.instantiate_at``, which turns
a constructor's ConfigError into one line naming the config key); what the config cannot say
alone (the data's class count, the run folder, a resumed checkpoint) is added here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cifar_lab.config.trainer import global_batch
from cifar_lab.errors import ConfigError
from cifar_lab.instantiate import instantiate_at
from cifar_lab.runtime.run_folder import RunFolder


def instantiate_group(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a group like callbacks/logger (entries may be null)."""
    if not cfg:
        return []
    return [
        instantiate_at(f"{group}.{name}", entry)
        for name, entry in cfg.items()
        if entry is not None and "_target_" in entry
    ]


def resolved_group(cfg: DictConfig, key: str) -> dict[str, Any]:
    """cfg[key] as a plain resolved dict ({} when the group is empty or null)."""
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if node else {}


def build_datamodule(cfg: DictConfig, stage: str | None = None):
    """The DataModule of cfg.data (``data.path`` is only a command-line shorthand), set up for
    ``stage`` ("fit", "test") when one is given."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("path", None)
    datamodule = instantiate_at("data", data_cfg)
    if stage is not None:
        datamodule.prepare_data()
        datamodule.setup(stage)
    return datamodule


# module.* switches of the training tricks: callbacks (build_tricks), not ImageClassifier arguments
TRICK_OPTIONS = ("device_warmup", "whitening_init", "whitening_eps", "whiten_bias_epochs", "ema_decay")


def build_module(cfg: DictConfig, datamodule):
    """The ImageClassifier: cfg.model's net sized to the data's classes, with optimizer and scheduler."""
    from hydra.utils import instantiate

    from cifar_lab.training.module import ImageClassifier, compiled

    options = {key: value for key, value in cfg.module.items() if key not in (*TRICK_OPTIONS, "compile")}
    module = ImageClassifier(
        net=instantiate(cfg.model)(num_classes=datamodule.num_classes),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=datamodule.num_classes,
        classes=list(datamodule.classes),
        mean=datamodule.mean.tolist(),
        std=datamodule.std.tolist(),
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        **options,
    )
    return compiled(module, cfg.module.get("compile", False))


def build_tricks(cfg: DictConfig) -> list[Any]:
    """The training tricks that module.* switches on, each a callback, after the guard every run has."""
    from cifar_lab.recipes.device_warmup import DeviceWarmup
    from cifar_lab.recipes.whitening import FreezeWhiteningBias, WhiteningInit
    from cifar_lab.training.finite import FiniteLossGuard

    module = cfg.module
    tricks: list[Any] = [FiniteLossGuard()]
    if module.device_warmup:
        tricks.append(DeviceWarmup())  # first: its passes leave the weights as they were
    if module.whitening_init:
        tricks.append(WhiteningInit(module.whitening_eps))
    if module.whiten_bias_epochs is not None:
        tricks.append(FreezeWhiteningBias(module.whiten_bias_epochs))
    if module.get("ema_decay") is not None:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        # validation, the checkpoints' state_dict and the final weights are the average
        tricks.append(EMAWeightAveraging(decay=module.ema_decay))
    return tricks


def build_callbacks(cfg: DictConfig, datamodule, loggers: list[Any], preemption) -> tuple[list[Any], Any]:
    """The training tricks (build_tricks), cfg.callbacks, and the run's own: the training clock,
    resume checkpoints and, in a search, trial pruning (the loggers' run ids are build_run's).

    Returns the callbacks and the pruning callback (None outside a search)."""
    from cifar_lab.runtime.checkpoints.callback import ResumeCheckpoint
    from cifar_lab.training.timing import TrainingTimer

    callbacks_cfg = resolved_group(cfg, "callbacks")
    if datamodule.val_size == 0 and callbacks_cfg.get("model_checkpoint"):
        # without validation there is nothing to rank: keep only last.ckpt
        callbacks_cfg["model_checkpoint"].update(monitor=None, save_top_k=0)
    if not loggers:
        callbacks_cfg.pop("learning_rate_monitor", None)  # it needs a logger to write to
    callbacks = build_tricks(cfg) + instantiate_group(OmegaConf.create(callbacks_cfg), "callbacks")
    # after the others' on_train_start (Lookahead's copy of the weights is not training time)
    callbacks.append(TrainingTimer())
    resume_file = RunFolder.of(cfg).resume_checkpoint
    callbacks.append(ResumeCheckpoint(resume_file, cfg.get("checkpoint_every_n_steps"), preemption))
    pruning = trial_pruning(cfg)
    if pruning is not None:
        callbacks.append(pruning)
    return callbacks, pruning


def trial_pruning(cfg: DictConfig):
    """The Optuna pruning callback of a search job (``+optuna_trial=N``), else None: only
    search jobs import cifar_lab.search, so training never needs Optuna."""
    from cifar_lab.search.study import TRIAL_KEY

    if cfg.get(TRIAL_KEY) is None:
        return None
    from cifar_lab.search.pruning import trial_pruning as pruning_callback

    return pruning_callback(cfg)


def steps_per_epoch(cfg: DictConfig, datamodule) -> int:
    """Training steps in a full epoch on each device (before any trainer.limit_train_batches)."""
    world_size = global_batch(1, cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1))
    per_rank = datamodule.num_train // world_size
    steps = per_rank // datamodule.batch_size if datamodule.drop_last else -(-per_rank // datamodule.batch_size)
    if steps < 1:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} is larger than the {per_rank} training images per device"
        )
    return steps


def fractional_epochs(cfg: DictConfig, datamodule) -> dict[str, int]:
    """Trainer limits for ``epochs`` (may be fractional, e.g. airbench's 9.9; validate_config checked it)."""
    epochs = cfg.epochs
    return {"max_epochs": math.ceil(epochs), "max_steps": math.ceil(epochs * steps_per_epoch(cfg, datamodule))}


def build_trainer(cfg: DictConfig, datamodule, callbacks: list[Any], loggers: list[Any], resume_from=None):
    """The Lightning Trainer of cfg.trainer, with what the run adds to it.

    ``resume_from``: (path, checkpoint dict) of a resumed run, handed to the checkpoint IO so
    Lightning does not read the file a second time."""
    from cifar_lab.runtime.checkpoints.files import SafeCheckpointIO
    from cifar_lab.runtime.distributed import route_ddp_children_through_job_config
    from cifar_lab.runtime.hardware import resolved_precision
    from cifar_lab.training.lightning_internals import keep_lightning_off_the_signals
    from cifar_lab.training.timing import training_timer

    extra: dict[str, Any] = {} if datamodule.val_size > 0 else {"limit_val_batches": 0}
    extra["precision"] = resolved_precision(cfg.trainer)  # "auto": what the device does best
    if cfg.get("epochs") is not None:
        extra.update(fractional_epochs(cfg, datamodule))
    if cfg.trainer.get("profiler") is None:
        from cifar_lab.training.profiling import NoProfiler

        extra["profiler"] = NoProfiler()  # no profiling asked for: no per-hook cost either
    timer = training_timer(callbacks)
    checkpoint_io = SafeCheckpointIO(
        RunFolder.of(cfg).root,
        clock=timer.clock if timer is not None else None,
    )
    if resume_from is not None:
        checkpoint_io.preload(*resume_from)
    route_ddp_children_through_job_config()  # DDP ranks: the job's own config and folder
    trainer = instantiate_at(
        "trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[checkpoint_io], **extra
    )
    # SIGTERM is ours (Preemption): Lightning's handler would stop without a consistent checkpoint
    keep_lightning_off_the_signals(trainer)
    return trainer


@dataclass
class TrainingRun:
    """The pieces of one training run, built once by :func:`build_run` and handed to each step."""

    cfg: DictConfig
    datamodule: Any
    module: Any
    trainer: Any
    pruning: Any  # the trial-pruning callback of a search job, else None
    ckpt_path: Path | None  # the checkpoint a resumed run continues from
    preemption: Any

    @property
    def pruned_epoch(self) -> int | None:
        return self.pruning.pruned_epoch if self.pruning is not None else None

    @property
    def timer(self):
        """The run's TrainingTimer (training.timing): the training clock metrics.json reports."""
        from cifar_lab.training.timing import training_timer

        return training_timer(self.trainer.callbacks)


def build_run(cfg: DictConfig, preemption, ckpt_path: Path | None, checkpoint: dict[str, Any] | None) -> TrainingRun:
    """Data (set up for fit), module, loggers, callbacks and trainer; a resumed run's
    checkpoint (``ckpt_path``, already read as ``checkpoint``) is checked against them first."""
    from cifar_lab.runtime.checkpoints.model import check_resumable

    datamodule = build_datamodule(cfg, stage="fit")
    module = build_module(cfg, datamodule)
    if checkpoint is not None:
        check_resumable(checkpoint, module, datamodule.batch_size, ckpt_path)
    datamodule.augment_spec.check_model_takes_crops(module.net, datamodule.image_size)
    from cifar_lab.training.loggers import build_loggers

    loggers, named = build_loggers(cfg, checkpoint)  # resumed: the same runs (training.loggers)
    callbacks, pruning = build_callbacks(cfg, datamodule, loggers, preemption)
    if named:
        from cifar_lab.training.run_ids import RunIds

        callbacks.append(RunIds(named))  # their run ids in every checkpoint: what a resume continues
    resume_from = (ckpt_path, checkpoint) if checkpoint is not None else None
    trainer = build_trainer(cfg, datamodule, callbacks, loggers, resume_from)
    return TrainingRun(cfg, datamodule, module, trainer, pruning, ckpt_path, preemption)
