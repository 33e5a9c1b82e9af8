"""The LightningModule: loss, per-stage metrics, and the optimizer/scheduler wiring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from cifar_lab.config.module import validate_module_options
from cifar_lab.recipes.mixing import batch_mix
from cifar_lab.recipes.tta import tta_logits
from cifar_lab.runtime.checkpoints.state import restore_resume_state, resume_state
from cifar_lab.training.finite import check_before_save
from cifar_lab.training.loop import ends_epoch
from cifar_lab.training.metrics import stage_metrics
from cifar_lab.training.optim import apply_lr_scales, param_groups

# metrics whose running state must survive a mid-epoch resume (train/* are epoch means, and
# val/acc_best is the best over all epochs so far)
_RESUMED_METRICS = ("train_loss", "train_acc", "val_acc_best")


class ImageClassifier(pl.LightningModule):
    """Wraps any image classification net.

    Metrics live on the device and accumulate per step; Lightning computes and logs them
    once per epoch, so a step costs no host sync. ``val/acc_best`` tracks the best
    validation accuracy so far, which is what sweeps optimize. The training tricks (whitening
    init, warm-up, freezing, Lookahead), the non-finite-loss guard and the training clock are
    callbacks (``cifar_lab.recipes``, ``training.finite``, ``training.timing``), which
    ``training.build.build_callbacks`` adds.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        *,
        num_classes: int,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        exclude_norm_and_bias_from_decay: bool = True,
        channels_last: bool = True,
        norm_lr_scale: float = 1.0,
        tta_level: int = 0,
        val_tta_level: int | None = None,
        classes: Sequence[str] = (),
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # plain values only: checkpoints must load without unpickling code objects
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        validate_module_options(dict(self.hparams))
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # MixUp / CutMix (recipes.mixing): soft targets for the loss; None: hard labels
        self.batch_mix = batch_mix(num_classes, mixup_alpha, cutmix_alpha)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

        for name, metric in stage_metrics(num_classes).items():  # train_loss, val_acc, test_auroc, ...
            setattr(self, name, metric)

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
        return self.net(images)

    # -- training ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:
            self.val_acc_best.reset()  # a resumed run keeps the best of its earlier epochs

    def on_train_epoch_start(self) -> None:
        # a fresh epoch: no running train/* state (a no-op, except after a resume from a
        # checkpoint written at an epoch's last step, which carries that epoch's state)
        self.train_loss.reset()
        self.train_acc.reset()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        targets = labels
        if self.batch_mix is not None:
            # soft targets; train/acc counts a hit on each mixed image's dominant label
            images, targets = self.batch_mix(images, labels)
            labels = targets.argmax(1)
        logits = self(images)
        loss = self.criterion(logits, targets)
        # update(), not forward(): no per-batch compute, the epoch value is computed once
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), labels)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if ends_epoch(self.trainer, batch_idx):
            # once per epoch, not per step: Lightning's result collection moves a logged metric
            # to the device again on every call, ~0.2-0.4 ms a step for these two at batch 16
            # (benchmarks/step_overhead.py); the values are epoch means of every step either way
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

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
    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the config, each group at its real lr (norm_lr_scale, decoupled units
        and Muon's own lr applied): what training steps with, and what tasks.lr_find reads."""
        groups = param_groups(self.net, self.hparams.exclude_norm_and_bias_from_decay, self.hparams.norm_lr_scale)
        optimizer = self.optimizer_factory(params=groups)
        apply_lr_scales(optimizer)
        return optimizer

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_before_save(self.trainer)  # every rank, every checkpoint: none of diverged weights
        # what a resumed run needs to continue exactly: running metric states and global RNGs
        checkpoint["cifar_lab_resume"] = resume_state(self, _RESUMED_METRICS)
        # what predict/eval need to rebuild the model without the training config
        checkpoint["cifar_lab"] = {
            "classes": list(self.hparams.classes),
            "mean": list(self.hparams.mean),
            "std": list(self.hparams.std),
            "model_config": self.hparams.model_config,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_resume_state(self, checkpoint.get("cifar_lab_resume"), _RESUMED_METRICS)


def compiled(module: ImageClassifier, mode: bool | str) -> ImageClassifier:
    """``module`` with ``torch.compile`` applied the way Lightning supports (module.compile).

    The LightningModule is compiled, not its net: Lightning's ``from_compiled`` keeps the same
    module (state_dict keys, hooks, checkpoints unchanged) with compiled steps, which DDP's wrapper
    then calls, so dynamo sees the DDP module and splits the graph at DDP's bucket boundaries:
    each bucket's all-reduce overlaps the rest of the compiled backward. ``mode``: false (none),
    true (torch.compile's default) or a torch.compile mode."""
    validate_module_options({"compile": mode})
    if mode is False:
        return module
    from lightning.pytorch.utilities.compile import from_compiled

    return from_compiled(torch.compile(module, mode=None if mode is True else mode))
