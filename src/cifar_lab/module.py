"""The LightningModule: loss, per-stage metrics, and the optimizer/scheduler wiring."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from cifar_lab.errors import ConfigError, NonFiniteLossError
from cifar_lab.optim import apply_lr_scales, param_groups
from cifar_lab.recipes.tta import TTA_LEVELS, tta_logits
from cifar_lab.rng import rng_state, set_rng_state
from cifar_lab.timing import DeviceClock

# metrics whose running state must survive a mid-epoch resume (train/* are epoch means, and
# val/acc_best is the best over all epochs so far)
_RESUMED_METRICS = ("train_loss", "train_acc", "val_acc_best")
# how often (in steps) the non-finite-loss flag is read on accelerators: each read is a host
# sync; on the CPU it is free, so it is read every step there
_FINITE_CHECK_EVERY = 25


class ImageClassifier(pl.LightningModule):
    """Wraps any image classification net.

    Metrics live on the device and accumulate per step; Lightning computes and logs them
    once per epoch, so a step costs no host sync. ``val/acc_best`` tracks the best
    validation accuracy so far, which is what sweeps optimize.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        *,
        num_classes: int,
        label_smoothing: float = 0.0,
        exclude_norm_and_bias_from_decay: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        device_warmup: bool = True,
        whitening_init: bool = True,
        whitening_eps: float = 5e-4,
        whiten_bias_epochs: int | None = None,
        norm_lr_scale: float = 1.0,
        tta_level: int = 0,
        val_tta_level: int | None = None,
        classes: Sequence[str] = (),
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if tta_level not in TTA_LEVELS:
            raise ConfigError(f"module.tta_level={tta_level!r} is not one of {TTA_LEVELS}")
        if val_tta_level is not None and val_tta_level not in TTA_LEVELS:
            raise ConfigError(f"module.val_tta_level={val_tta_level!r} is not one of {TTA_LEVELS}, or null (as tta_level)")
        if norm_lr_scale <= 0:
            raise ConfigError(f"module.norm_lr_scale={norm_lr_scale!r} must be > 0")
        # plain values only: checkpoints must load without unpickling code objects
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # not registered as a submodule: the state_dict keeps one copy of the weights, under
        # net.*, whether or not the net is compiled (checkpoints stay interchangeable)
        object.__setattr__(self, "_forward_net", torch.compile(self.net) if compile else self.net)

        # No per-update checks: torchmetrics' NaN and argument checks each read a value back
        # to the host, a GPU sync every step. Labels come from our own loaders and a NaN loss
        # is caught by _track_finite without a sync.
        def mean() -> MeanMetric:
            return MeanMetric(nan_strategy="disable")

        def accuracy() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes, average="micro", validate_args=False)

        self.train_loss, self.val_loss, self.test_loss = mean(), mean(), mean()
        self.train_acc, self.val_acc, self.test_acc = accuracy(), accuracy(), accuracy()
        # AUROC keeps every score of the epoch: cheap for val/test, skipped for train
        self.val_auroc = MulticlassAUROC(num_classes, average="macro", validate_args=False)
        self.test_auroc = MulticlassAUROC(num_classes, average="macro", validate_args=False)
        self.val_acc_best = MaxMetric()
        self.clock = DeviceClock()
        self.warmup_seconds = 0.0
        self.steps_at_train_start = 0
        # first step whose loss was not finite (-1: none), kept on the device: no sync per step
        self._bad_step: torch.Tensor | None = None
        self._total_steps = 0  # the fit's optimizer steps, set with the schedule in configure_optimizers
        self._bad_loss: torch.Tensor | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name twice per hook dispatch, ~46 times a training step;
        # nn.Module.__setattr__ spends ~10 Python calls each checking for parameters, buffers
        # and submodules. A plain value replacing a plain attribute is stored as nn.Module
        # itself would store it (benchmarks/step_overhead.py: ~460 Python calls a step less).
        if name in self.__dict__ and isinstance(value, (str, int, float, type(None))):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._forward_net(images)

    # -- training ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:
            self.val_acc_best.reset()  # a resumed run keeps the best of its earlier epochs
        self._warm_up_device()
        if self.hparams.whitening_init and self.trainer.ckpt_path is None:
            self.clock.start()  # the init is part of training, as airbench counts it
            self._init_whitening()
            self.clock.stop()

    def on_train_start(self) -> None:
        # after the data is on the device: loading is not training time
        self.clock.start()
        self.steps_at_train_start = self.trainer.global_step  # > 0 after a resume

    def on_train_epoch_start(self) -> None:
        # a fresh epoch: no running train/* state (a no-op, except after a resume from a
        # checkpoint written at an epoch's last step, which carries that epoch's state)
        self.train_loss.reset()
        self.train_acc.reset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # per step, not per epoch: Lightning skips on_train_epoch_start on a mid-epoch resume
        bias = self._frozen_whitening_bias()
        if bias is not None and bias.requires_grad and self.trainer.world_size == 1:
            # one device: stop the gradient itself, so backward skips the first conv's input
            # gradient at full resolution (~5% of a CPU step); DDP keeps it (see below)
            bias.requires_grad_(False)

    def _frozen_whitening_bias(self) -> nn.Parameter | None:
        """The whitening bias once its whiten_bias_epochs are over, else None."""
        epochs = self.hparams.whiten_bias_epochs
        layer = getattr(self.net, "whiten", None)
        if epochs is None or layer is None or layer.bias is None or self.current_epoch < epochs:
            return None
        return layer.bias

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # airbench: the whitening bias learns the data's offset early, then is frozen. Under
        # DDP its gradient is dropped (the optimizer then skips it) rather than requires_grad
        # turned off mid-run, which DDP forbids for a parameter it has registered.
        bias = self._frozen_whitening_bias()
        if bias is not None:
            bias.grad = None

    def on_train_end(self) -> None:
        self.clock.stop()

    def _should_warm_up(self) -> bool:
        return bool(self.hparams.device_warmup) and self.device.type == "cuda" and self.trainer.world_size == 1

    def _warm_up_device(self) -> None:
        """Throw-away train and TTA-eval passes at the real shapes, outside the clock.

        cudnn autotuning (trainer=gpu sets benchmark) and lazy kernel/library loading cost
        seconds at the first step of each shape: part of a fresh process, not of training,
        and airbench excludes them the same way. Weights, BN statistics and RNG are restored.
        One device only: under DDP a stray backward would fire the gradient hooks.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        if not self._should_warm_up() or datamodule is None:
            return
        started = time.perf_counter()
        state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        shape = datamodule.train_sample(1, device=self.device).shape[1:]
        generator = torch.Generator(device=self.device).manual_seed(0)

        def batch(size: int) -> torch.Tensor:
            return torch.randn(size, *shape, device=self.device, generator=generator)

        with self.trainer.precision_plugin.forward_context():
            for _ in range(2):
                self(batch(datamodule.batch_size)).float().sum().backward()
            self.net.eval()
            with torch.no_grad():
                tta_logits(self, batch(datamodule.eval_batch_size), self.hparams.tta_level)
            self.net.train()
        torch.linalg.eigh(torch.eye(4, device=self.device))  # the whitening init's solver
        self.net.load_state_dict(state)
        self.net.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.warmup_seconds = time.perf_counter() - started

    def _init_whitening(self) -> None:
        from cifar_lab.recipes.whitening import find_whitening_layer, init_whitening

        layer = find_whitening_layer(self.net)
        datamodule = getattr(self.trainer, "datamodule", None)
        if layer is None or datamodule is None:
            return
        # airbench's 5000 images, from every class alike
        init_whitening(layer, datamodule.train_sample(5000, device=self.device), eps=self.hparams.whitening_eps)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        self._track_finite(loss.detach())
        # update(), not forward(): no per-batch compute, the epoch value is computed once
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), labels)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        trainer = self.trainer
        epoch_ends = batch_idx + 1 >= trainer.num_training_batches or trainer.global_step >= self._total_steps
        if epoch_ends:
            # once per epoch, not per step: Lightning's result collection moves a logged metric
            # to the device again on every call, ~0.2-0.4 ms a step for these two at batch 16
            # (benchmarks/step_overhead.py); the values are epoch means of every step either way
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        # the epoch's and the run's last step too: under DDP the shared check must happen inside
        # the batch loop, since at epoch end rank 0's progress bar runs metric syncs the others do not
        if self.device.type == "cpu" or trainer.global_step % _FINITE_CHECK_EVERY == 0 or epoch_ends:
            self.check_finite(all_ranks=True)

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def _track_finite(self, loss: torch.Tensor) -> None:
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, self.global_step + 1), self._bad_step)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)

    def check_finite(self, all_ranks: bool = False) -> None:
        """Raise NonFiniteLossError if any training loss so far was NaN or infinite.

        ``all_ranks``: under DDP, gather every rank's flag so that all ranks stop at the same
        step: a rank that stopped alone would leave the others waiting forever in the next
        gradient all-reduce. Only for calls every rank makes at the same step.
        """
        if self._bad_step is None:
            return
        # (first bad step, its loss) per rank; float32 holds step numbers exactly up to 2**24
        state = torch.stack([self._bad_step.float(), self._bad_loss])
        rank = None
        if all_ranks and self.trainer.world_size > 1:
            states = self.all_gather(state).reshape(-1, 2)
            bad = (states[:, 0] >= 0).nonzero().flatten()
            if len(bad):
                rank = int(bad[states[bad, 0].argmin()])
                state = states[rank]
        step, value = (float(v) for v in state.tolist())  # the one host sync
        if step >= 0:
            where = f" on rank {rank} of {self.trainer.world_size}" if rank is not None else ""
            raise NonFiniteLossError(
                f"the training loss became {value} at step {int(step)} (epoch {self.current_epoch}){where}; "
                f"training stopped, weights of that step were not saved; lower optimizer.lr, set "
                f"trainer.gradient_clip_val, or check the data",
                step=int(step),
            )

    # -- evaluation ----------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        level = self.hparams.tta_level
        if stage == "val" and self.hparams.val_tta_level is not None:
            level = self.hparams.val_tta_level  # cheaper per-epoch validation (level 2 runs 6 views)
        logits = tta_logits(self, images, level).float()
        loss = nn.functional.cross_entropy(logits, labels)
        loss_metric = getattr(self, f"{stage}_loss")
        acc = getattr(self, f"{stage}_acc")
        auroc = getattr(self, f"{stage}_auroc")
        loss_metric.update(loss, weight=len(labels))
        acc.update(logits, labels)
        auroc.update(logits.softmax(-1), labels)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/auroc", auroc, on_step=False, on_epoch=True)
        return logits

    def on_validation_start(self) -> None:
        self.clock.pause("validation")  # per-epoch validation is not training time (no-op outside fit)

    def on_validation_end(self) -> None:
        # after the callbacks' on_validation_end, where ModelCheckpoint writes (checkpoint time)
        self.clock.resume()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # the logits go to test-end callbacks (confusion matrix, worst mistakes) for free
        return self._eval_step("test", batch)

    # -- optimization --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.net, self.hparams.exclude_norm_and_bias_from_decay, self.hparams.norm_lr_scale)
        optimizer = self.optimizer_factory(params=groups)
        apply_lr_scales(optimizer)
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self._total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # never write a checkpoint of diverged weights
        # what a resumed run needs to continue exactly: running metric states and global RNGs
        checkpoint["cifar_lab_resume"] = {
            "metrics": {name: _metric_state(getattr(self, name)) for name in _RESUMED_METRICS},
            "rng": rng_state(),
        }
        # what predict/eval need to rebuild the model without the training config
        checkpoint["cifar_lab"] = {
            "classes": list(self.hparams.classes),
            "mean": list(self.hparams.mean),
            "std": list(self.hparams.std),
            "model_config": self.hparams.model_config,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        resume = checkpoint.get("cifar_lab_resume")
        if not resume:
            return
        for name, state in resume.get("metrics", {}).items():
            if name in _RESUMED_METRICS:
                _load_metric_state(getattr(self, name), state)
        set_rng_state(resume.get("rng", {}))


def _metric_state(metric: Any) -> dict[str, Any]:
    """A torchmetrics metric's running state (tensors only; list states are not resumable)."""
    states = {name: getattr(metric, name) for name in metric._defaults}
    return {
        "states": {k: v.detach().clone() for k, v in states.items() if isinstance(v, torch.Tensor)},
        "update_count": int(metric._update_count),
    }


def _load_metric_state(metric: Any, state: dict[str, Any]) -> None:
    for name, value in state.get("states", {}).items():
        if name in metric._defaults:
            current = getattr(metric, name)
            setattr(metric, name, value.to(device=current.device, dtype=current.dtype))
    metric._update_count = int(state.get("update_count", 0))
    metric._computed = None
