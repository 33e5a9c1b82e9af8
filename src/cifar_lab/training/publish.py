"""What a run sends to its experiment loggers besides Lightning's metrics: the summary (the
flattened config beside the final metrics) and the test figures, to every logger that takes them.

Through Lightning's logger interface (``log_hyperparams``, ``log_metrics``) and each logger's
public image call: TensorBoard's ``experiment.add_image``, W&B's ``log_image``, MLflow's
``experiment.log_image``; a figure is drawn once, and its pixels go to each (three loggers would
otherwise draw it three times, seconds each for the mistakes grid). The logger classes are
Lightning's, which load neither MLflow nor W&B: a TensorBoard run never imports them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from cifar_lab.runtime.run_folder import RunFolder


def summary_params(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as hparams (Hydra's own settings and the paths left out), with paths
    inside the run folder as <run>/...: no user folders in logs."""
    from cifar_lab.runtime.checkpoints.files import portable_paths

    params = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key not in ("hydra", "paths")
    }
    return portable_paths(params, RunFolder.of(cfg).root.resolve())


def publish_summary(loggers: list[Any], cfg: DictConfig, summary: dict[str, Any]) -> None:
    """Every logger: the config as hparams and the final metrics, at the run's last step (without
    a step TensorBoard files the final values at step 0, a false first point on every curve)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final = {k: v for k, v in summary.items() if "/" in k and isinstance(v, float)}
    final.update(train_time_s=summary["train_time_s"])
    params, step = summary_params(cfg), summary["steps"]
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=final, step=step)  # the hparams tab, with its metrics
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(final, step=step)
        logger.finalize("success")


def figure_loggers(loggers: list[Any]) -> list[Any]:
    """The loggers that take figures (TensorBoard, MLflow, W&B)."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    return [logger for logger in loggers if isinstance(logger, (TensorBoardLogger, MLFlowLogger, WandbLogger))]


def publish_figure(loggers: list[Any], tag: str, figure: Any, step: int) -> None:
    """A matplotlib figure (on an Agg canvas: runtime.figures), as ``tag`` at ``step``, to every
    logger that takes figures (MLflow: the artifact ``<tag>.png``; its artifacts have no steps)."""
    import numpy as np
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
            logger.experiment.flush()
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[pixels], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, pixels, f"{tag}.png")


def close_loggers(loggers: list[Any], success: bool) -> None:
    """End the runs that outlive the Trainer: W&B keeps one run per process, which the next
    WandbLogger of the process (a sweep's next job, a resume) would otherwise reuse."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish(exit_code=0 if success else 1)
