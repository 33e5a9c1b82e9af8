"""`python train.py tune=lr_find ...`: Lightning's learning-rate range test on the training config.

The run is built exactly as training builds it (``training.build.build_run``: data, module,
callbacks, trainer) and handed to ``Tuner.lr_find``, which trains ``tune.num_training`` steps at
rising lrs with its own schedule, then puts the weights, optimizer and loop state back from a
temporary checkpoint in the run folder. Nothing else of the training run happens: Lightning
swaps every callback for its own during the sweep and ends the fit after it, so no
checkpoints/, metrics.json or TensorBoard events are written; only lr_find.png and
lr_find.json.

Lightning sweeps the torch lr of every parameter group alike. Ours is a Hydra partial whose
``lr`` may not be the torch lr (sgd_decoupled: per 1024 examples), so the sweep's range and its
results are converted with the ratio of the built optimizer's lr to ``optimizer.lr``; a config
whose groups train at different lrs (module.norm_lr_scale, Muon) is refused, as one swept lr
cannot stand for them. ``update_attr=False``: the answer is a config value to train with, not
an attribute set on a module that trains no further.
"""

from __future__ import annotations

import copy
import logging
import math
import shlex
from typing import Any

from omegaconf import DictConfig, open_dict

from cifar_lab.config.check import validate_config
from cifar_lab.config.lr_find import lr_find_range
from cifar_lab.errors import ConfigError
from cifar_lab.runtime.run_folder import LR_FIND_PLOT, RunFolder

log = logging.getLogger(__name__)


def lr_find(cfg: DictConfig) -> dict[str, Any]:
    """Sweep, write lr_find.png and lr_find.json, print the suggestion; return the results.

    ConfigError where the sweep cannot answer for this config (different lrs per group, more
    than one device, no suggestion from the curve)."""
    from cifar_lab.training.failures import disk_full_as_error

    validate_config(cfg)
    with disk_full_as_error(cfg):
        return _lr_find(cfg)


def _lr_find(cfg: DictConfig) -> dict[str, Any]:
    import lightning.pytorch as pl

    from cifar_lab.runtime.hardware import set_cpu_threads, set_matmul_precision
    from cifar_lab.runtime.logs import route_library_logs_through_hydra
    from cifar_lab.training.build import build_run

    route_library_logs_through_hydra()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    set_cpu_threads(cfg)
    set_matmul_precision(cfg)
    run = build_run(sweep_config(cfg), preemption=None, ckpt_path=None, checkpoint=None)
    initialise_like_training(cfg, run)
    results = find(run, cfg)
    folder = RunFolder.of(cfg)
    _write(folder, results, run.trainer.is_global_zero)
    if results["suggested_lr"] is None:
        raise ConfigError(
            f"the lr sweep gave no suggestion: {results['steps']} steps left too few finite losses after the first 10 "
            f"(see {LR_FIND_PLOT}); widen tune.min_lr/tune.max_lr or raise tune.num_training"
        )
    _report(results, folder)
    return results


def find(run, cfg: DictConfig) -> dict[str, Any]:
    """``Tuner.lr_find`` on a built run (``training.build.TrainingRun`` of :func:`sweep_config`),
    in optimizer.lr's units; the run's weights, optimizer and loops are as before after it."""
    from lightning.pytorch.tuner import Tuner

    if run.trainer.world_size > 1:
        raise ConfigError(f"tune=lr_find runs on one device, not {run.trainer.world_size}: add trainer.devices=1")
    ratio = torch_lr_ratio(cfg, run.module)
    low, high = lr_find_range(cfg)
    tune = cfg.tune
    finder = Tuner(run.trainer).lr_find(
        run.module,
        datamodule=run.datamodule,
        min_lr=low * ratio,
        max_lr=high * ratio,
        num_training=tune.num_training,
        mode=tune.mode,
        early_stop_threshold=tune.early_stop_threshold,
        update_attr=False,
    )
    finder.results["loss"] = debiased(finder.results["loss"])
    torch_suggestion = finder.suggestion()  # Lightning's steepest-descent rule, on the debiased curve
    suggestion = torch_suggestion / ratio if torch_suggestion is not None else None
    return {
        "suggested_lr": suggestion,
        "command": train_command(suggestion),
        "lr": [lr / ratio for lr in finder.results["lr"]],
        "loss": [float(loss) for loss in finder.results["loss"]],
        "lr_key": "optimizer.lr",
        "torch_lr_per_optimizer_lr": ratio,
        "min_lr": low,
        "max_lr": high,
        "num_training": tune.num_training,
        "steps": len(finder.results["lr"]),
        "mode": tune.mode,
    }


# the smoothing of Lightning's _LRCallback (its beta, not an lr_find argument)
LIGHTNING_LOSS_BETA = 0.98


def debiased(losses: list[float], beta: float = LIGHTNING_LOSS_BETA) -> list[float]:
    """Lightning's smoothed sweep losses with their bias correction made exact.

    Lightning 2.6 divides the k-th step's running average by ``1 - beta**(k+1)`` (it reads
    ``global_step`` after the step), not ``1 - beta**k``: its first point reads half the loss,
    and the curve climbs over its first ~50 steps whatever the lr does (Lightning issue
    14167), which tilts the steepest-descent suggestion toward larger lrs.
    tests/test_tuning.py checks the first point against the untrained net's loss, so a
    Lightning that fixes this fails there rather than being corrected twice."""
    return [loss * (1 - beta ** (k + 1)) / (1 - beta**k) for k, loss in enumerate(losses, start=1)]


def sweep_config(cfg: DictConfig) -> DictConfig:
    """The training config with the sweep's length and nothing the sweep would not use.

    * ``tune.num_training`` steps, however many epochs that takes (the training length would cut
      a sweep short);
    * no validation: Lightning lets the sweep validate at each epoch's end, and only the
      training loss counts (the epoch interval is past the sweep's last possible epoch);
    * no loggers: Lightning logs nothing during the sweep, but a logger would still write its
      (empty) run at teardown, beside no training run."""
    sweep = copy.deepcopy(cfg)
    with open_dict(sweep):
        sweep.epochs = None
        sweep.trainer.max_epochs = -1
        sweep.trainer.max_steps = cfg.tune.num_training
        sweep.trainer.check_val_every_n_epoch = cfg.tune.num_training + 1
        sweep.logger = None
    return sweep


def torch_lr_ratio(cfg: DictConfig, module) -> float:
    """The torch lr of every parameter group per unit of ``optimizer.lr``; ConfigError when the
    groups' lrs differ, which a sweep of one lr cannot honour."""
    lrs = [group["lr"] for group in module.build_optimizer().param_groups]
    if any(not math.isclose(lr, lrs[0], rel_tol=1e-9) for lr in lrs):
        if cfg.module.get("norm_lr_scale", 1.0) != 1.0:
            why = f"module.norm_lr_scale={cfg.module.norm_lr_scale:g} trains the norm layers at that multiple"
        elif "muon" in str(cfg.optimizer.get("_target_", "")):
            why = "optimizer=muon trains the conv filters at muon_lr"
        else:
            why = f"the optimizer's parameter groups train at {len(set(lrs))} different lrs"
        raise ConfigError(
            f"tune=lr_find sweeps one lr for every parameter group, but {why}: find the lr with module.norm_lr_scale=1 "
            f"(and optimizer=sgd_decoupled for muon's SGD part), or tune these by a sweep (python train.py -m ...)"
        )
    return lrs[0] / float(cfg.optimizer.lr)


def initialise_like_training(cfg: DictConfig, run) -> None:
    """The data-driven init training starts from (module.whitening_init), which the sweep would
    miss: Lightning's finder runs first in on_fit_start, before our callbacks' own."""
    from cifar_lab.recipes.whitening import find_whitening_layer, init_whitening

    if not cfg.module.whitening_init:
        return
    layer = find_whitening_layer(run.module.net)
    if layer is not None:
        images = run.datamodule.train_sample(5000, device=layer.weight.device)
        init_whitening(layer, images, eps=cfg.module.whitening_eps)


def train_command(lr: float | None) -> str:
    """`python train.py <this command line, without the tune> optimizer.lr=LR`."""
    from hydra.core.hydra_config import HydraConfig

    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    keep = [o for o in typed if not o.lstrip("+~").startswith(("tune=", "tune.", "tune/", "optimizer.lr="))]
    lr_text = f"optimizer.lr={lr:.3g}" if lr is not None else "optimizer.lr=?"
    return " ".join(["python train.py", *(shlex.quote(o) for o in keep), lr_text])  # ready to paste


def _write(folder: RunFolder, results: dict[str, Any], is_global_zero: bool) -> None:
    from cifar_lab.runtime.figures import lr_find_figure, png_bytes
    from cifar_lab.runtime.io import atomic_write_bytes, write_json_atomic

    if not is_global_zero:
        return
    folder.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder.lr_find, results)
    figure = lr_find_figure(results["lr"], results["loss"], results["suggested_lr"], results["mode"])
    atomic_write_bytes(folder.lr_find_plot, png_bytes(figure))


def _report(results: dict[str, Any], folder: RunFolder) -> None:
    from cifar_lab.runtime.logs import display_path

    lr = results["suggested_lr"]
    lines = (
        f"suggested lr: optimizer.lr={lr:.3g} (steepest descent of the loss over {results['steps']} steps, "
        f"{results['min_lr']:.3g} to {results['max_lr']:.3g})",
        f"train with: {results['command']}",
    )
    for line in lines:
        log.info("%s", line)
        print(line)
    log.info("the curve: %s, the numbers: %s", display_path(folder.lr_find_plot), display_path(folder.lr_find))
