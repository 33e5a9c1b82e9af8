"""The training task: one validated config in, one trained and tested model out.

Only Hydra and OmegaConf are imported at module level: `python train.py --help` and config
errors answer in a moment, before torch and Lightning load.
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_lab.config import global_batch, instantiate_at, validate_config
from cifar_lab.errors import CifarLabError, ConfigError

log = logging.getLogger(__name__)


def config_dir() -> str:
    """The Hydra config folder: bundled in the wheel, or conf/ of the source checkout."""
    bundled = Path(__file__).resolve().parent / "conf"
    if bundled.is_dir():
        return str(bundled)
    return str(Path(__file__).resolve().parents[2] / "conf")


def _instantiate_dict(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a group like callbacks/logger (entries may be null)."""
    if not cfg:
        return []
    return [instantiate_at(f"{group}.{name}", entry) for name, entry in cfg.items() if entry is not None and "_target_" in entry]


def _resolved_dict(cfg: DictConfig, key: str) -> dict[str, Any]:
    """cfg[key] as a plain resolved dict ({} when the group is empty or null)."""
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if node else {}


def build_datamodule(cfg: DictConfig):
    """The DataModule of cfg.data (``data.path`` is only a command-line shorthand)."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("path", None)
    return instantiate_at("data", data_cfg)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _fractional_epochs(cfg: DictConfig, datamodule) -> dict[str, int]:
    """Trainer limits for ``epochs`` (may be fractional, e.g. airbench's 9.9; validate_config checked it)."""
    epochs = cfg.epochs
    world_size = global_batch(1, cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1))
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
    return _display(Path(best))  # relative: the log names no user folders


class DiskFullError(CifarLabError):
    """The disk filled up while the run wrote its outputs."""


def _checkpoint_dirs(cfg: DictConfig) -> list[Path]:
    """Where this run's checkpoints go: checkpoints/ of the run folder (and ModelCheckpoint's)."""
    dirs = [Path(cfg.paths.output_dir) / "checkpoints"]
    configured = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    if configured and Path(str(configured)) not in dirs:
        dirs.append(Path(str(configured)))
    return dirs


def _resume_path(cfg: DictConfig) -> Path | None:
    """The checkpoint to continue from: ckpt_path, or with resume=latest the run folder's newest."""
    from cifar_lab.resume import find_latest

    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume not in (None, "latest"):
        raise ConfigError(f"resume={resume!r} must be null or 'latest' (or give ckpt_path=PATH)")
    every = cfg.get("checkpoint_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(f"checkpoint_every_n_steps={every!r} must be a positive integer or null")
    if resume and ckpt_path:
        raise ConfigError("set either resume=latest or ckpt_path=PATH, not both")
    if ckpt_path:
        return Path(str(ckpt_path))
    if resume != "latest":
        return None
    found = [p for p in (find_latest(d) for d in _checkpoint_dirs(cfg)) if p is not None]
    if not found:
        log.warning("resume=latest: no checkpoint in %s yet, starting from scratch", _display(_checkpoint_dirs(cfg)[0]))
        return None
    latest = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("resume=latest: continuing from %s", _display(latest))
    return latest


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (no user folders in logs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _short_target(target: object) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def class_mismatch(theirs: list[str], ours: list[str]) -> str | None:
    """How a checkpoint's classes differ from the data's (count, then names in order); None: they match.

    Shared by resuming and eval: a net scored or trained on other classes gives wrong numbers silently."""
    theirs, ours = [str(c) for c in theirs], [str(c) for c in ours]
    if len(theirs) != len(ours):
        return f"it was trained on {len(theirs)} classes, this data has {len(ours)}"
    if theirs != ours:
        return f"its class names {theirs[:4]}... differ from this data's {ours[:4]}..."
    return None


def _check_compatible(checkpoint: dict[str, Any], module, datamodule, path: Path) -> None:
    """One CheckpointError line when ``checkpoint`` was trained with another model or data."""
    from cifar_lab.errors import CheckpointError

    info = checkpoint.get("cifar_lab") or {}
    theirs_model = (info.get("model_config") or {}).get("_target_")
    ours_model = (module.hparams.model_config or {}).get("_target_")
    theirs_classes, ours_classes = info.get("classes"), list(module.hparams.classes)
    problems = []
    if theirs_model and ours_model and theirs_model != ours_model:
        problems.append(f"it holds a {_short_target(theirs_model)}, this run builds a {_short_target(ours_model)}")
    if theirs_classes is not None and (mismatch := class_mismatch(theirs_classes, ours_classes)):
        problems.append(mismatch)
    if not problems:
        theirs, ours = checkpoint["state_dict"], module.state_dict()
        missing = [k for k in ours if k not in theirs]
        unexpected = [k for k in theirs if k not in ours]
        reshaped = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
        if reshaped:
            k = reshaped[0]
            problems.append(f"{k} has shape {list(theirs[k].shape)} there, {list(ours[k].shape)} here "
                            f"({len(reshaped)} tensors differ)")
        elif missing or unexpected:
            problems.append(f"its weights {'lack ' + missing[0] if missing else 'have an extra ' + unexpected[0]} "
                            f"({len(missing)} missing, {len(unexpected)} extra)")
    loader_states = (((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("state_dict") or {}).get("combined_loader") or []
    for state in loader_states[:1]:
        if isinstance(state, dict) and state.get("batch_size") not in (None, datamodule.batch_size):
            problems.append(f"it trained with data.batch_size={state['batch_size']}, this run has {datamodule.batch_size}")
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this run: {'; '.join(problems)}; resume with the settings it "
            f"was trained with, or start from scratch without ckpt_path/resume"
        )


def _check_crop_fits(net, datamodule) -> None:
    """Fail before training, in one line, if the model cannot take a data.crop-sized image."""
    import torch

    spec = datamodule.augment_spec
    was_training = net.training
    try:
        for crop in spec.crop_sizes(datamodule.image_size):
            try:
                with torch.no_grad():
                    net.eval()(torch.zeros(2, 3, crop, crop))
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                setting = f"data.crop={crop}" if len(spec.stages) == 1 else f"data.crop={list(spec.crop)} (size {crop})"
                raise ConfigError(
                    f"{setting} does not fit model {type(net).__name__}: pick a crop size it takes "
                    f"(FastNet: >= 9 at kernel_size 2), or data.crop_epochs=0 ({first})"
                ) from None
    finally:
        net.train(was_training)


def _route_library_logs_through_hydra() -> None:
    """Lightning and torchmetrics add their own console handlers; Hydra's already print
    (and also write the run's log file), so drop theirs to print each line once.

    Also silence what a user can neither act on nor understand: Lightning's use of a
    torch-deprecated pytree class (a warning per fit, fixed in Lightning, not here)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test, write metrics.json; return the metrics (test/*, val/*, timings).

    SIGTERM/SIGINT during training save ``checkpoints/resume.ckpt`` and raise
    :class:`cifar_lab.resume.Preempted`; a NaN/inf loss raises NonFiniteLossError and marks
    the run failed in metrics.json. A full disk is one DiskFullError line.
    """
    from cifar_lab.resume import Preemption

    preemption = Preemption()
    preemption.install()
    try:
        return _train(cfg, preemption)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the disk is full: could not write {_display(Path(exc.filename)) if exc.filename else 'the outputs'} "
                f"of '{_display(Path(cfg.paths.output_dir))}' ({exc.strerror}); free space and resume with resume=latest"
            ) from None
        raise
    finally:
        preemption.uninstall()


def _set_cpu_threads(cfg: DictConfig) -> None:
    """CPU training: one intra-op thread per usable core, shared by the processes of this node.

    Applies to ``accelerator: cpu``, and to ``auto`` where no GPU is visible (the default
    trainer on a laptop); an explicit ``cpu_threads`` applies to every run."""
    import torch

    from cifar_lab.config import usable_cpus

    threads = cfg.get("cpu_threads")
    if threads is None:
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        if not (accelerator == "cpu" or (accelerator == "auto" and not _gpu_visible())):
            return  # GPU runs keep torch's own choice for their host-side work
        devices = cfg.trainer.get("devices", 1)
        processes = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1
        threads = max(1, usable_cpus() // processes)
    torch.set_num_threads(int(threads))


def _gpu_visible() -> bool:
    """Whether Lightning's ``accelerator: auto`` would pick a GPU (its own checks: NVML-based
    for CUDA, so no CUDA context exists before a fork-based strategy starts)."""
    from lightning.fabric.accelerators import CUDAAccelerator, MPSAccelerator

    return CUDAAccelerator.is_available() or MPSAccelerator.is_available()


def _train(cfg: DictConfig, preemption) -> dict[str, Any]:
    validate_config(cfg)
    ckpt_path = _resume_path(cfg)

    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint

    _route_library_logs_through_hydra()

    from cifar_lab.checkpoint_io import SafeCheckpointIO, load_checkpoint
    from cifar_lab.distributed import route_ddp_children_through_job_config
    from cifar_lab.errors import NonFiniteLossError
    from cifar_lab.io import write_json_atomic
    from cifar_lab.module import ImageClassifier
    from cifar_lab.resume import Preempted
    from cifar_lab.resume_checkpoint import ResumeCheckpoint
    from cifar_lab.timing import DeviceClock

    output_dir = Path(cfg.paths.output_dir)
    # read (weights-only) and check a checkpoint before any data work or output
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_cpu_threads(cfg)

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
    if checkpoint is not None:
        _check_compatible(checkpoint, module, datamodule, ckpt_path)
    _check_crop_fits(net, datamodule)

    validating = datamodule.val_size > 0
    callbacks_cfg = _resolved_dict(cfg, "callbacks")
    if not validating and callbacks_cfg.get("model_checkpoint"):
        # without validation there is nothing to rank: keep only last.ckpt
        callbacks_cfg["model_checkpoint"].update(monitor=None, save_top_k=0)
    logger_cfg = _resolved_dict(cfg, "logger")
    if checkpoint is not None:
        # the resumed run appends to the same TensorBoard run; steps the killed process logged
        # after its checkpoint are purged (they are trained again)
        for entry in logger_cfg.values():
            if entry and str(entry.get("_target_", "")).endswith("TensorBoardLogger"):
                entry["purge_step"] = int(checkpoint.get("global_step", 0))
    loggers = _instantiate_dict(OmegaConf.create(logger_cfg), "logger")
    if not loggers:
        callbacks_cfg.pop("learning_rate_monitor", None)  # it needs a logger to write to
    callbacks = _instantiate_dict(OmegaConf.create(callbacks_cfg), "callbacks")
    callbacks.append(ResumeCheckpoint(output_dir / "checkpoints", cfg.get("checkpoint_every_n_steps"), preemption))
    pruning = _trial_pruning(cfg)
    if pruning is not None:
        callbacks.append(pruning)
    extra: dict[str, Any] = {} if validating else {"limit_val_batches": 0}
    if cfg.get("epochs") is not None:
        extra.update(_fractional_epochs(cfg, datamodule))
    if cfg.trainer.get("profiler") is None:
        from cifar_lab.profiling import NoProfiler

        extra["profiler"] = NoProfiler()  # no profiling asked for: no per-hook cost either
    checkpoint_io = SafeCheckpointIO(output_dir, clock=module.clock)
    if checkpoint is not None:
        checkpoint_io.preload(ckpt_path, checkpoint)
        del checkpoint
    route_ddp_children_through_job_config()  # DDP ranks: the job's own config and folder
    trainer = instantiate_at("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[checkpoint_io], **extra)
    # SIGTERM is ours (Preemption): Lightning's handler would stop without a consistent checkpoint
    trainer._signal_connector.register_signal_handlers = lambda: None

    def failed(status: str, error: str, **more: Any) -> None:
        if trainer.is_global_zero:
            summary = {"status": status, "error": error, "epochs": trainer.current_epoch,
                       "steps": trainer.global_step, "seed": cfg.seed, **more}
            try:
                write_json_atomic(output_dir / "metrics.json", summary)
            except OSError as exc:
                log.error("could not write metrics.json (%s)", exc.strerror or exc)

    preemption.phase = "training"
    try:
        fit_ckpt = _display(ckpt_path) if ckpt_path else None  # relative: no user folders in the log
        trainer.fit(module, datamodule=datamodule, ckpt_path=fit_ckpt, weights_only=True)
        if preemption.requested:  # signalled after the last training step: keep the finished state
            trainer.save_checkpoint(output_dir / "checkpoints" / "resume.ckpt")
            raise Preempted(preemption.signum)
        if not any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks):
            # lean recipes (callbacks=none) save nothing per epoch; keep the final weights for
            # eval, predict and resume, written after the training clock stopped
            trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")
    except Preempted as stop:
        command = _resume_command(cfg)
        name = signal.Signals(stop.signum).name
        saved = "checkpoint saved" if stop.saved else "stopped at once (no new checkpoint)"
        stop.message = f"pre-empted by {name} at step {trainer.global_step}: {saved}; resume with: {command}"
        failed("preempted", f"pre-empted by {name}", resume=command)
        raise
    except NonFiniteLossError as err:
        from cifar_lab.resume import find_latest

        good = find_latest(output_dir / "checkpoints")
        kept = f"; the last good checkpoint is {_display(good)}" if good else "; no checkpoint was saved before it"
        failed("failed", f"{err}{kept}", failed_step=err.step)
        raise NonFiniteLossError(f"{err}{kept}", err.step) from None
    except CifarLabError:
        raise
    except Exception as exc:
        if not (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            failed("failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        raise
    finally:
        preemption.phase = "finishing"
    fit_metrics = _scalar_metrics(trainer.callback_metrics)

    test_metrics: dict[str, float] = {}
    test_clock = DeviceClock()
    pruned_epoch = pruning.pruned_epoch if pruning is not None else None
    if not trainer.interrupted and pruned_epoch is None:  # a pruned trial is not worth a test pass
        test_clock.start()
        trainer.test(module, datamodule=datamodule, ckpt_path=_test_ckpt_path(cfg, trainer), verbose=False, weights_only=True)
        test_clock.stop()
        test_metrics = _scalar_metrics(trainer.callback_metrics)

    metrics = {**fit_metrics, **test_metrics}
    fit_time = module.clock.seconds
    # images trained by this process (a resumed run's clock starts at its checkpoint)
    trained_images = (trainer.global_step - module.steps_at_train_start) * datamodule.batch_size * trainer.world_size
    summary = {
        **{k: v for k, v in metrics.items() if k.split("/")[0] in ("train", "val", "test")},
        # what airbench counts: data-driven init + training steps + the final (TTA) test pass,
        # in every configuration: per-epoch validation and checkpoint writes are their own fields
        "train_time_s": round(fit_time + test_clock.seconds, 3),
        "fit_time_s": round(fit_time, 3),
        "test_time_s": round(test_clock.seconds, 3),
        "val_time_s": round(module.clock.excluded["validation"], 3),
        "checkpoint_time_s": round(module.clock.excluded["checkpoint"], 3),
        # outside train_time_s, as airbench's warm-up: cudnn autotuning, kernel loading (GPU)
        "warmup_time_s": round(module.warmup_seconds, 3),
        "train_images_per_s": round(trained_images / fit_time, 1) if fit_time > 0 else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "params": sum(p.numel() for p in net.parameters()),
        "seed": cfg.seed,
        "device": str(trainer.strategy.root_device),
        "status": "interrupted" if trainer.interrupted else ("pruned" if pruned_epoch is not None else "completed"),
        "resumed": ckpt_path is not None,
    }
    if pruned_epoch is not None:
        summary["pruned_epoch"] = pruned_epoch
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", summary)
        _log_hparams(loggers, cfg, summary)
    log.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
    if preemption.requested:  # signalled during the test pass: the run is complete, then stop
        stop = Preempted(preemption.signum)
        stop.message = (f"received {signal.Signals(preemption.signum).name} after training finished: the run "
                        f"completed and wrote its metrics; nothing to resume")
        raise stop
    return summary


def _trial_pruning(cfg: DictConfig):
    """The Optuna pruning callback of a search job (``+optuna_trial=N``), else None: only
    search jobs import cifar_lab.search, so training never needs Optuna."""
    from cifar_lab.search.study import TRIAL_KEY

    if cfg.get(TRIAL_KEY) is None:
        return None
    from cifar_lab.search.pruning import trial_pruning

    return trial_pruning(cfg)


def _resume_command(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    from cifar_lab.resume import resume_command

    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    return resume_command(cfg.paths.output_dir, overrides)


def _log_hparams(loggers: list[Any], cfg: DictConfig, summary: dict[str, Any]) -> None:
    """The hparams tab: the flattened config beside the final metrics of this run."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from cifar_lab.checkpoint_io import RUN_MARKER, _map_strings

    final = {k: v for k, v in summary.items() if "/" in k and isinstance(v, float)}
    final.update(train_time_s=summary["train_time_s"])
    params = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key not in ("hydra", "paths")
    }
    # paths inside the run folder (e.g. the checkpoint folder) as <run>/...: no user folders in logs
    run_dir = str(Path(cfg.paths.output_dir).resolve())
    params = _map_strings(params, lambda s: RUN_MARKER + s[len(run_dir):] if s.startswith(run_dir) else s)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # at the last step, beside the test metrics: without a step TensorBoard files the
            # final values at step 0, a false first point on every train/val curve
            logger.log_hyperparams(params, metrics=final, step=summary["steps"])
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
    from cifar_lab.resume import Preempted

    try:
        return optimized_value(cfg, train(cfg))
    except Preempted as stop:
        # pre-emption stops the whole process (a sweep too): one line, the way back in
        message = getattr(stop, "message", None) or (
            f"stopped by {signal.Signals(stop.signum).name} at once (before training, or a second signal): no new "
            f"checkpoint; run the same command again (add resume=latest in the same run folder to continue)"
        )
        log.warning("%s", message)
        print(message, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except CifarLabError as err:
        if _is_multirun():
            log.error("error: %s", err)
            return math.nan  # one bad job must not end the sweep
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if not _is_multirun():
            raise
        # a crashed job is recorded (metrics.json status failed, traceback in its log) and the
        # sweep goes on: the other jobs' results are never lost
        log.exception("job failed")
        return math.nan
