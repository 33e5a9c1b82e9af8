"""The check of a composed training config, run before any data is touched or any model is
built: each group's rules in their own module, in the order a run meets them."""

from __future__ import annotations

from omegaconf import DictConfig

from cifar_lab.config.callbacks import validate_callbacks
from cifar_lab.config.data import validate_data_config
from cifar_lab.config.lr_find import validate_lr_find
from cifar_lab.config.module import validate_module_config
from cifar_lab.config.optimization import validate_optimization
from cifar_lab.config.run import typed_keys, validate_typed
from cifar_lab.config.trainer import validate_trainer
from cifar_lab.config.values import get, require
from cifar_lab.training.loggers import check_logger_extras


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first invalid value of the composed training config."""
    for group in ("data", "model", "optimizer", "trainer"):
        require(get(cfg, group, None) is not None, f"config group '{group}' is empty: pick one with {group}=NAME")
    validate_data_config(cfg)
    validate_optimization(cfg)
    validate_module_config(cfg)
    validate_trainer(cfg)
    validate_callbacks(cfg)
    if get(cfg, "tune", None) is not None:
        validate_lr_find(cfg)
    validate_typed(cfg, typed_keys())
    check_logger_extras(cfg)
