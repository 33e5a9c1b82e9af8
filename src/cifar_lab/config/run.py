"""The run's own keys (conf/train.yaml's top level): seed, training length, where a run
continues from, and the typed values a task would replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cifar_lab.config.values import get, is_int, is_number, plain, require
from cifar_lab.errors import ConfigError

# what numpy's and Lightning's seeding accept
MAX_SEED = 2**32 - 1
RESUME_MODES = (None, "latest")


def check_seed(cfg: DictConfig, key: str) -> None:
    seed = get(cfg, key, None)
    require(
        seed is None or (is_int(seed) and 0 <= seed <= MAX_SEED),
        f"{key}={seed!r} must be a whole number from 0 to {MAX_SEED} (what numpy and Lightning accept)",
    )


def training_epochs(cfg: DictConfig) -> float | None:
    """The run's length in epochs (``epochs``, else ``trainer.max_epochs``); None: set by steps."""
    epochs = get(cfg, "epochs", None)
    if epochs is not None:
        require(
            is_number(epochs) and epochs > 0,
            f"epochs={epochs!r} must be a positive number, fractions allowed (e.g. 9.9), or null for trainer.max_epochs",
        )
        return epochs
    max_epochs = get(cfg, "trainer.max_epochs", None)
    return max_epochs if is_int(max_epochs) and max_epochs > 0 else None


def validate_resume(cfg: DictConfig) -> None:
    """Where a run continues from: ckpt_path, resume=latest, step checkpoints."""
    resume, ckpt_path = get(cfg, "resume", None), get(cfg, "ckpt_path", None)
    require(resume in RESUME_MODES, f"resume={resume!r} must be null or 'latest' (or give ckpt_path=PATH)")
    every = get(cfg, "checkpoint_every_n_steps", None)
    require(
        every is None or (is_int(every) and every >= 1),
        f"checkpoint_every_n_steps={every!r} must be a positive integer or null",
    )
    require(not (resume and ckpt_path), "set either resume=latest or ckpt_path=PATH, not both")
    if ckpt_path is not None:
        require(
            Path(str(ckpt_path)).is_file(),
            f"ckpt_path={ckpt_path!r} is not a file: give the path of a .ckpt to resume from",
        )


def typed_keys() -> set[str]:
    """The keys typed on this command line (Hydra's task overrides, without +/++/~); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {override.lstrip("+~").split("=", 1)[0] for override in HydraConfig.get().overrides.task}


def ignored_value(key: str, value: Any, reason: str, fix: str) -> ConfigError:
    """The one line for a typed value that the task would replace: why, and what to type instead."""
    return ConfigError(f"{key}={plain(value)!r} would be ignored: {reason}; {fix}")


def validate_typed(cfg: DictConfig, typed: set[str]) -> None:
    """A typed value that train() replaces (training length, validation settings) stops the run."""
    epochs = get(cfg, "epochs", None)
    if epochs is not None:
        reason = f"epochs={epochs} sets the training length"
        for key, fix in (
            ("trainer.max_epochs", "use epochs={value} instead"),
            ("trainer.max_steps", "add epochs=null to stop at trainer.max_steps"),
        ):
            value = get(cfg, key, None)
            if key in typed and value not in (None, -1):
                raise ignored_value(key, value, reason, fix.format(value=value))
    if get(cfg, "data.val_size", None) == 0:
        reason = "data.val_size=0 turns validation off"
        for key, unforced in (
            ("trainer.limit_val_batches", 0),
            ("callbacks.model_checkpoint.monitor", None),
            ("callbacks.model_checkpoint.save_top_k", 0),
        ):
            value = get(cfg, key, None)
            if key in typed and value != unforced and value is not None:
                raise ignored_value(key, value, reason, "set data.val_size=N (> 0) to validate")
