"""metrics.json of a finished run: the final metrics, the timings airbench counts, what ran."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cifar_lab.runtime.run_folder import RunStatus

if TYPE_CHECKING:
    from cifar_lab.training.build import TrainingRun


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of Lightning's callback_metrics, as floats."""
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def run_status(interrupted: bool, pruned: bool) -> RunStatus:
    """The status of a run that finished training: Lightning's stop, a pruned trial, or completed."""
    if interrupted:
        return RunStatus.INTERRUPTED
    return RunStatus.PRUNED if pruned else RunStatus.COMPLETED


def run_summary(run: TrainingRun, metrics: dict[str, float], test_seconds: float) -> dict[str, Any]:
    """What metrics.json says of a run (a ``build.TrainingRun``) that finished training
    (completed, pruned or interrupted)."""
    cfg, trainer, module, datamodule = run.cfg, run.trainer, run.module, run.datamodule
    clock = run.timer.clock
    fit_time = clock.seconds
    # images trained by this process (a resumed run's clock starts at its checkpoint)
    trained_images = (trainer.global_step - run.timer.steps_at_start) * datamodule.batch_size * trainer.world_size
    summary = {
        **{k: v for k, v in metrics.items() if k.split("/")[0] in ("train", "val", "test")},
        # what airbench counts: data-driven init + training steps + the final (TTA) test pass,
        # in every configuration: per-epoch validation and checkpoint writes are their own fields
        "train_time_s": round(fit_time + test_seconds, 3),
        "fit_time_s": round(fit_time, 3),
        "test_time_s": round(test_seconds, 3),
        "val_time_s": round(clock.excluded["validation"], 3),
        "checkpoint_time_s": round(clock.excluded["checkpoint"], 3),
        # outside train_time_s, as airbench's warm-up: cudnn autotuning, kernel loading (GPU)
        "warmup_time_s": round(clock.excluded["warmup"], 3),
        "train_images_per_s": round(trained_images / fit_time, 1) if fit_time > 0 else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "params": sum(p.numel() for p in module.net.parameters()),
        "seed": cfg.seed,
        "device": str(trainer.strategy.root_device),
        "status": run_status(trainer.interrupted, run.pruned_epoch is not None).value,
        "resumed": run.ckpt_path is not None,
    }
    if run.pruned_epoch is not None:
        summary["pruned_epoch"] = run.pruned_epoch
    summary.update(early_stopping_fields(trainer))
    return summary


def early_stopping_fields(trainer) -> dict[str, Any]:
    """``stopped_early`` (and when true: ``stopped_epoch``, ``stop_reason``) of a run with
    callbacks.early_stopping; {} without it. An early stop is a finished run (status completed):
    a target reached or a curve gone flat, not a failure.

    Early only if steps were left: a stop the callback asks for at the run's last epoch (or a
    stale val/acc after the partial last epoch of fractional ``epochs``) ends nothing early."""
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

    callback = trainer.early_stopping_callback
    if callback is None:
        return {}
    planned = trainer.estimated_stepping_batches
    early = callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED and trainer.global_step < planned
    if not early:
        return {"stopped_early": False}
    return {
        "stopped_early": True,
        # epochs trained when it stopped (1-based, as ``epochs`` and pruned_epoch count them)
        "stopped_epoch": callback.stopped_epoch + 1,
        # stopping_threshold (a target reached), patience_exhausted, divergence_threshold or
        # non_finite_metric: Lightning's EarlyStoppingReason; its own sentence is in train.log
        "stop_reason": callback.stopping_reason.name.lower(),
    }
