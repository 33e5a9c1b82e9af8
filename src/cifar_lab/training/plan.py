"""The run plan: what a training run will do, printed once before it starts.

The first screen of `python train.py` names the model, data, length, precision and device,
optimizer, run folder and loggers of the run that was built (``build.TrainingRun``), in a
handful of lines; it goes to the console and the run's log file (Hydra's logging), on rank 0 only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from cifar_lab.runtime.logs import display_path
from cifar_lab.runtime.run_folder import RunFolder

if TYPE_CHECKING:
    from cifar_lab.training.build import TrainingRun

log = logging.getLogger(__name__)

# optimizer values worth a word beside lr, in this order
_OPTIMIZER_KEYS = ("momentum", "weight_decay", "betas")


def _choice(group: str) -> str | None:
    """The option picked for a config group (``model=fast`` -> "fast"), None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _short(target: object) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _picked(group: str, node: Any) -> str:
    """``group=option`` as typed, or the node's class when the option is unknown (a config built in code)."""
    option = _choice(group)
    return f"{group}={option}" if option else _short(node.get("_target_") if node else None)


def _model_line(run: TrainingRun) -> str:
    net = run.module.net
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    name = run.cfg.model.get("name")  # model=timm's architecture
    what = f"{type(net).__name__} ({_picked('model', run.cfg.model)}{f', name={name}' if name else ''})"
    frozen = f", {params - trainable:,} frozen" if trainable != params else ""
    return f"{what}: {params / 1e6:.2f}M parameters{frozen}"


def _data_line(run: TrainingRun) -> str:
    dm, cfg = run.datamodule, run.cfg
    sizes = dm.split_sizes
    path = cfg.data.get("path")
    where = f"{_picked('data', cfg.data)}{f' ({display_path(Path(str(path)))})' if path else ''}"
    return (
        f"{where}: {sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} test images, "
        f"{dm.num_classes} classes, {dm.image_size}x{dm.image_size}, batch {dm.batch_size}"
    )


def _length_line(run: TrainingRun) -> str:
    from cifar_lab.training.build import steps_per_epoch

    trainer = run.trainer
    if trainer.fast_dev_run:
        return f"fast_dev_run: {int(trainer.fast_dev_run)} batch(es) of train, val and test"
    per_epoch = steps_per_epoch(run.cfg, run.datamodule)
    limit = trainer.limit_train_batches  # Lightning sets it to overfit_batches under debug=overfit
    per_epoch = min(per_epoch, limit) if isinstance(limit, int) else max(int(per_epoch * limit), 1)
    epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
    total = epochs * per_epoch if epochs is not None else None
    if trainer.max_steps not in (None, -1):
        total = trainer.max_steps if total is None else min(total, trainer.max_steps)
    shown = run.cfg.get("epochs") if run.cfg.get("epochs") is not None else epochs
    epochs_text = f"{shown:g} epoch{'' if shown == 1 else 's'}" if shown is not None else "no epoch limit"
    steps_text = f"{total:,} steps" if total is not None else "no step limit"
    return f"{epochs_text} x {per_epoch:,} steps per device = {steps_text}"


def _device_line(run: TrainingRun) -> str:
    trainer = run.trainer
    devices = trainer.num_nodes * trainer.num_devices
    device = trainer.strategy.root_device.type
    if devices == 1:
        return f"{trainer.precision} on 1 {device} device"
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
    return f"{trainer.precision} on {devices} {device} devices ({strategy}, {trainer.num_nodes} node(s))"


def _optimizer_line(cfg: DictConfig) -> str:
    opt = cfg.optimizer
    values = [f"lr {opt.lr}"] + [f"{key} {opt[key]}" for key in _OPTIMIZER_KEYS if opt.get(key) is not None]
    scheduler = _picked("scheduler", cfg.scheduler) if cfg.get("scheduler") else "no lr schedule"
    return f"{_picked('optimizer', opt)} ({', '.join(values)}), {scheduler}"


def _loggers_line(run: TrainingRun) -> str:
    """Each logger and its folder (inside the run folder: relative to it)."""
    run_dir = RunFolder.of(run.cfg).root.resolve()
    names = []
    for logger in run.trainer.loggers:
        folder = getattr(logger, "log_dir", None)
        if folder:
            path = Path(str(folder)).resolve()
            where = f"{path.relative_to(run_dir)}/" if path.is_relative_to(run_dir) else display_path(path)
            names.append(f"{type(logger).__name__} ({where})")
        else:
            names.append(type(logger).__name__)
    return ", ".join(names) or "none"


def plan_lines(run: TrainingRun) -> list[str]:
    """The plan as ``label  text`` lines."""
    rows = {
        "model": _model_line(run),
        "data": _data_line(run),
        "length": _length_line(run),
        "precision": _device_line(run),
        "optimizer": _optimizer_line(run.cfg),
        "run folder": display_path(RunFolder.of(run.cfg).root),
        "loggers": _loggers_line(run),
    }
    if run.ckpt_path is not None:
        rows["resumes"] = display_path(run.ckpt_path)
    width = max(len(label) for label in rows)
    return [f"  {label:<{width}}  {text}" for label, text in rows.items()]


def log_run_plan(run: TrainingRun) -> None:
    """Log the plan once (rank 0 of a DDP run), as one record: one header in the log file."""
    if run.trainer.is_global_zero:
        log.info("run plan:\n%s", "\n".join(plan_lines(run)))
