"""The training task: one validated config in, one trained and tested model out.

``_train()`` reads as the run's story: check, build (``training.build.build_run``), say what
the run will do (``training.plan``), fit, test, summarize, close the loggers; ``train()`` wraps
it in the failure handling (``training.failures``). ``_fit``, ``_test`` and ``_summarize`` are
the few lines that call Lightning and ``training.summary``.
Only Hydra and OmegaConf are imported at module level: `python train.py --help` and config
errors answer in a moment, before torch and Lightning load.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from cifar_lab.config.check import validate_config
from cifar_lab.config.resolvers import register_resolvers
from cifar_lab.errors import CifarLabError, exits_on_user_error
from cifar_lab.overrides import overrides_read_first
from cifar_lab.runtime.logs import display_path
from cifar_lab.runtime.run_folder import RunFolder
from cifar_lab.training.failures import (
    DiskFullError,
    disk_full_as_error,
    fit_failures,
    stop_if_signalled_after_training,
)

if TYPE_CHECKING:
    from cifar_lab.training.build import TrainingRun

__all__ = ["DiskFullError", "config_dir", "main", "train"]

log = logging.getLogger(__name__)

register_resolvers()  # before @hydra.main composes: conf/ interpolates ${cifar_lab.*:...}


def config_dir() -> str:
    """The Hydra config folder: bundled in the wheel, or conf/ of the source checkout."""
    package = Path(__file__).resolve().parents[1]  # src/cifar_lab (or site-packages/cifar_lab)
    bundled = package / "conf"
    if bundled.is_dir():
        return str(bundled)
    return str(package.parents[1] / "conf")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test, write metrics.json; return the metrics (test/*, val/*, timings).

    SIGTERM/SIGINT during training save ``checkpoints/resume.ckpt`` and raise
    :class:`cifar_lab.runtime.checkpoints.preemption.Preempted`; a NaN/inf loss raises NonFiniteLossError and marks
    the run failed in metrics.json. A full disk is one DiskFullError line.
    """
    from cifar_lab.runtime.checkpoints.preemption import Preemption

    preemption = Preemption()
    preemption.install()
    try:
        with disk_full_as_error(cfg):
            return _train(cfg, preemption)
    finally:
        preemption.uninstall()


def _train(cfg: DictConfig, preemption) -> dict[str, Any]:
    from cifar_lab.runtime.checkpoints.latest import resume_path

    validate_config(cfg)
    ckpt_path = resume_path(cfg)

    import lightning.pytorch as pl

    from cifar_lab.runtime.checkpoints.files import load_checkpoint
    from cifar_lab.runtime.hardware import set_cpu_threads, set_matmul_precision
    from cifar_lab.runtime.logs import route_library_logs_through_hydra
    from cifar_lab.training.build import build_run
    from cifar_lab.training.plan import log_run_plan
    from cifar_lab.training.publish import close_loggers

    route_library_logs_through_hydra()
    # read (weights-only) and check a checkpoint before any data work or output
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    set_cpu_threads(cfg)
    set_matmul_precision(cfg)
    run = build_run(cfg, preemption, ckpt_path, checkpoint)
    del checkpoint  # the checkpoint IO holds it until fit reads it
    log_run_plan(run)  # the first screen: what this run will do

    finished = False
    try:
        with fit_failures(cfg, run.trainer, preemption):
            _fit(run)
        metrics, test_seconds = _test(run)
        summary = _summarize(run, metrics, test_seconds)
        finished = True
        return summary
    finally:
        close_loggers(run.trainer.loggers, success=finished)


def _fit(run: TrainingRun) -> None:
    """trainer.fit, then the checkpoint eval, predict and resume need (written off the training clock)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cifar_lab.runtime.checkpoints.callback import signalled
    from cifar_lab.runtime.checkpoints.preemption import Preempted

    trainer = run.trainer
    folder = RunFolder.of(run.cfg)
    fit_ckpt = display_path(run.ckpt_path) if run.ckpt_path else None  # relative: no user folders in the log
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=fit_ckpt, weights_only=True)
    signum = signalled(trainer, run.preemption)
    if signum is not None:  # signalled after the last training step: keep the finished state
        trainer.save_checkpoint(folder.resume_checkpoint, weights_only=False)
        raise Preempted(signum)
    savers = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    if not savers:
        # lean recipes (callbacks=none) save nothing per epoch: keep the final weights
        trainer.save_checkpoint(folder.last_checkpoint, weights_only=False)
    for saver in (c for c in savers if c.save_last is True and c.dirpath):
        # Lightning 2.6 rewrites last.ckpt only at an epoch that saves a top-k one too: after a
        # last epoch with no new best, last.ckpt would still hold an earlier epoch's weights
        last = Path(saver.dirpath) / f"{saver.CHECKPOINT_NAME_LAST}{saver.FILE_EXTENSION}"
        trainer.save_checkpoint(last, weights_only=False)
        saver.last_model_path = str(last)


def _test(run: TrainingRun) -> tuple[dict[str, float], float]:
    """The fit metrics, plus the test pass's when the run finished; and the test pass's seconds."""
    from cifar_lab.training.summary import scalar_metrics
    from cifar_lab.training.timing import DeviceClock

    trainer = run.trainer
    metrics = scalar_metrics(trainer.callback_metrics)
    clock = DeviceClock()
    if not trainer.interrupted and run.pruned_epoch is None:  # a pruned trial is not worth a test pass
        clock.start()
        ckpt_path = _test_ckpt_path(run.cfg, trainer)
        trainer.test(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        clock.stop()
        metrics.update(scalar_metrics(trainer.callback_metrics))
    return metrics, clock.seconds


def _test_ckpt_path(cfg: DictConfig, trainer) -> str | None:
    """Which checkpoint scores the test split (None: the weights in memory)."""
    if cfg.test_ckpt != "best":
        return None
    callback = getattr(trainer, "checkpoint_callback", None)
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best:
        log.warning("test_ckpt=best but no best checkpoint exists (no validation?): testing the final weights")
        return None
    return display_path(Path(best))  # relative: the log names no user folders


def _summarize(run: TrainingRun, metrics: dict[str, float], test_seconds: float) -> dict[str, Any]:
    """Write metrics.json and the summary of every logger (training.publish), log the metrics, and return them."""
    from cifar_lab.training.publish import publish_summary
    from cifar_lab.training.summary import run_summary

    summary = run_summary(run, metrics, test_seconds)
    if run.trainer.is_global_zero:
        RunFolder.of(run.cfg).write_metrics(summary)
        publish_summary(run.trainer.loggers, run.cfg, summary)
    log.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
    stop_if_signalled_after_training(run.preemption)
    return summary


def optimized_value(cfg: DictConfig, summary: dict[str, Any]) -> float | None:
    """The value a sweeper maximizes (NaN when the run failed or did not log it)."""
    value = summary.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else math.nan


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@overrides_read_first
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """`python train.py ...` and the `cifar-lab-train` console script."""
    from cifar_lab.runtime.checkpoints.preemption import Preempted, PreemptedExit

    with exits_on_user_error():  # a single run's user error: its one line and exit status 2
        try:
            if cfg.get("tune") is not None:  # tune=lr_find: the lr range test instead of training
                from cifar_lab.tasks.lr_find import lr_find

                lr_find(cfg)
                return None
            return optimized_value(cfg, train(cfg))
        except Preempted as stop:
            # pre-emption stops the whole process (a sweep too): one line, the way back in
            message = getattr(stop, "message", None) or (
                f"stopped by {signal.Signals(stop.signum).name} at once (before training, or a second signal): no new "
                f"checkpoint; run the same command again (add resume=latest in the same run folder to continue)"
            )
            log.warning("%s", message)
            print(message, file=sys.stderr)
            raise PreemptedExit(stop.signum) from None  # status 128 + signal number
        except CifarLabError as err:
            if not _is_multirun():
                raise
            log.error("error: %s", err)  # logged: one bad job must not end the sweep
            return math.nan
        except Exception:
            if not _is_multirun():
                raise
            # a crashed job is recorded (metrics.json status failed, traceback in its log) and the
            # sweep goes on: the other jobs' results are never lost
            log.exception("job failed")
            return math.nan
