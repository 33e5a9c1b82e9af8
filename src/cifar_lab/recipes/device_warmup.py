"""Device warm-up before the training clock starts, as airbench excludes it from its times."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from cifar_lab.recipes.tta import tta_logits
from cifar_lab.training.timing import training_timer


class DeviceWarmup(pl.Callback):
    """At the start of a fit on one GPU: :func:`warm_up_device`, its seconds kept out of the
    training clock as ``excluded["warmup"]`` (metrics.json's ``warmup_time_s``)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = warm_up_device(pl_module)
        timer = training_timer(getattr(trainer, "callbacks", ()))
        if timer is not None:
            timer.clock.excluded["warmup"] += seconds


def warm_up_device(module) -> float:
    """Throw-away train and TTA-eval passes at the real shapes; returns their seconds (0: skipped).

    cudnn autotuning (trainer=gpu sets benchmark) and lazy kernel/library loading cost
    seconds at the first step of each shape: part of a fresh process, not of training,
    and airbench excludes them the same way. Weights, BN statistics and the state of every RNG
    they draw from (the CPU's, the GPU's: dropout) are restored.
    """
    trainer, device = module.trainer, module.device
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not needs_warm_up(module):
        return 0.0
    started = time.perf_counter()
    net = module.net
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    shape = datamodule.train_sample(1, device=device).shape[1:]
    generator = torch.Generator(device=device).manual_seed(0)

    def batch(size: int) -> torch.Tensor:
        return torch.randn(size, *shape, device=device, generator=generator)

    # every generator the passes draw from (dropout: the device's; the CPU's) is put back after
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with trainer.precision_plugin.forward_context():
            for _ in range(2):
                module(batch(datamodule.batch_size)).float().sum().backward()
            net.eval()
            with torch.no_grad():
                tta_logits(module, batch(datamodule.eval_batch_size), module.hparams.get("tta_level", 0))
            net.train()
        torch.linalg.eigh(torch.eye(4, device=device))  # the whitening init's solver
    net.load_state_dict(state)
    net.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def needs_warm_up(module) -> bool:
    """One CUDA device: elsewhere there is nothing to autotune or load lazily (and under DDP a
    stray backward would fire the gradient hooks)."""
    return module.device.type == "cuda" and module.trainer.world_size == 1
