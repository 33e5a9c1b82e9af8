"""The training task: one validated config in, one trained and tested model out.

Only Hydra and OmegaConf are imported at module level: `python train.py --help` and config
errors answer in a moment, before torch and Lightning load.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_lab.config import validate_config
from cifar_lab.errors import CifarLabError, ConfigError

log = logging.getLogger(__name__)


def config_dir() -> str:
    """The Hydra config folder: bundled in the wheel, or conf/ of the source checkout."""
    bundled = Path(__file__).resolve().parent / "conf"
    if bundled.is_dir():
        return str(bundled)
    return str(Path(__file__).resolve().parents[2] / "conf")


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group like callbacks/logger (entries may be null)."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry is not None and "_target_" in entry]


def _resolved_dict(cfg: DictConfig, key: str) -> dict[str, Any]:
    """cfg[key] as a plain resolved dict ({} when the group is empty or null)."""
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if node else {}


def build_datamodule(cfg: DictConfig):
    """The DataModule of cfg.data (``data.path`` is only a command-line shorthand)."""
    from hydra.utils import instantiate

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("path", None)
    return instantiate(data_cfg)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _fractional_epochs(cfg: DictConfig, datamodule) -> dict[str, int]:
    """Trainer limits for ``epochs`` (may be fractional, e.g. airbench's 9.9)."""
    epochs = cfg.epochs
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise ConfigError(f"epochs={epochs!r} must be a positive number (or null to use trainer.max_epochs)")
    devices = cfg.trainer.get("devices", 1)
    world_size = (devices if isinstance(devices, int) and devices > 0 else 1) * int(cfg.trainer.get("num_nodes", 1) or 1)
    per_rank = datamodule.num_train // world_size
    steps_per_epoch = per_rank // datamodule.batch_size if datamodule.drop_last else -(-per_rank // datamodule.batch_size)
    if steps_per_epoch < 1:
        raise ConfigError(f"data.batch_size={datamodule.batch_size} is larger than the {per_rank} training images per device")
    return {"max_epochs": math.ceil(epochs), "max_steps": math.ceil(epochs * steps_per_epoch)}


def _test_ckpt_path(cfg: DictConfig, trainer) -> str | None:
    """Which checkpoint scores the test split (None: the weights in memory)."""
    if cfg.test_ckpt != "best":
        return None
    callback = getattr(trainer, "checkpoint_callback", None)
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best:
        log.warning("test_ckpt=best but no best checkpoint exists (no validation?): testing the final weights")
        return None
    return best


def _route_library_logs_through_hydra() -> None:
    """Lightning and torchmetrics add their own console handlers; Hydra's already print
    (and also write the run's log file), so drop theirs to print each line once."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test, write metrics.json; return the metrics (test/*, val/*, timings)."""
    validate_config(cfg)

    import lightning.pytorch as pl
    from hydra.utils import instantiate

    _route_library_logs_through_hydra()

    from cifar_lab.io import write_json_atomic
    from cifar_lab.module import DeviceClock, ImageClassifier

    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = instantiate(cfg.model)(num_classes=datamodule.num_classes)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = ImageClassifier(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        num_classes=datamodule.num_classes,
        classes=list(datamodule.classes),
        mean=datamodule.mean.tolist(),
        std=datamodule.std.tolist(),
        model_config=model_cfg,
        **cfg.module,
    )

    validating = datamodule.val_size > 0
    callbacks_cfg = _resolved_dict(cfg, "callbacks")
    if not validating and callbacks_cfg.get("model_checkpoint"):
        # without validation there is nothing to rank: keep only last.ckpt
        callbacks_cfg["model_checkpoint"].update(monitor=None, save_top_k=0)
    loggers = _instantiate_dict(OmegaConf.create(_resolved_dict(cfg, "logger")))
    if not loggers:
        callbacks_cfg.pop("learning_rate_monitor", None)  # it needs a logger to write to
    callbacks = _instantiate_dict(OmegaConf.create(callbacks_cfg))
    extra: dict[str, Any] = {} if validating else {"limit_val_batches": 0}
    if cfg.get("epochs") is not None:
        extra.update(_fractional_epochs(cfg, datamodule))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = _scalar_metrics(trainer.callback_metrics)

    test_metrics: dict[str, float] = {}
    test_clock = DeviceClock()
    if not trainer.interrupted:
        test_clock.start()
        trainer.test(module, datamodule=datamodule, ckpt_path=_test_ckpt_path(cfg, trainer), verbose=False)
        test_clock.stop()
        test_metrics = _scalar_metrics(trainer.callback_metrics)

    metrics = {**fit_metrics, **test_metrics}
    fit_time = module.clock.seconds
    trained_images = trainer.global_step * datamodule.batch_size * trainer.world_size
    summary = {
        **{k: v for k, v in metrics.items() if k.split("/")[0] in ("train", "val", "test")},
        # what airbench counts: data-driven init + training steps + the final (TTA) test pass
        "train_time_s": round(fit_time + test_clock.seconds, 3),
        "fit_time_s": round(fit_time, 3),
        "test_time_s": round(test_clock.seconds, 3),
        "train_images_per_s": round(trained_images / fit_time, 1) if fit_time > 0 else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "params": sum(p.numel() for p in net.parameters()),
        "seed": cfg.seed,
        "device": str(trainer.strategy.root_device),
        "status": "interrupted" if trainer.interrupted else "completed",
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", summary)
        _log_hparams(loggers, cfg, summary)
    log.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
    return summary


def _log_hparams(loggers: list[Any], cfg: DictConfig, summary: dict[str, Any]) -> None:
    """The hparams tab: the flattened config beside the final metrics of this run."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final = {k: v for k, v in summary.items() if "/" in k and isinstance(v, float)}
    final.update(train_time_s=summary["train_time_s"])
    params = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key not in ("hydra", "paths")
    }
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=final)
            logger.finalize("success")


def optimized_value(cfg: DictConfig, summary: dict[str, Any]) -> float | None:
    """The value a sweeper maximizes (NaN when the run failed or did not log it)."""
    value = summary.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else math.nan


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """`python train.py ...` and the `cifar-lab-train` console script."""
    try:
        return optimized_value(cfg, train(cfg))
    except CifarLabError as err:
        if _is_multirun():
            log.error("error: %s", err)
            return math.nan  # one bad job must not end the sweep
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
