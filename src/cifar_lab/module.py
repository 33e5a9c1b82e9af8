"""The LightningModule: loss, per-stage metrics, and the optimizer/scheduler wiring."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from cifar_lab.errors import ConfigError
from cifar_lab.optim import apply_lr_scales, param_groups
from cifar_lab.recipes.tta import TTA_LEVELS, tta_logits


class DeviceClock:
    """Wall time of a region of device work: synchronizes the GPU before reading the clock."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None


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
        whitening_init: bool = True,
        whiten_bias_epochs: int | None = None,
        norm_lr_scale: float = 1.0,
        tta_level: int = 0,
        classes: Sequence[str] = (),
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if tta_level not in TTA_LEVELS:
            raise ConfigError(f"module.tta_level={tta_level!r} is not one of {TTA_LEVELS}")
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
        self._forward_net = torch.compile(self.net) if compile else self.net

        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # AUROC keeps every score of the epoch: cheap for val/test, skipped for train
        self.val_auroc = MulticlassAUROC(num_classes, average="macro")
        self.test_auroc = MulticlassAUROC(num_classes, average="macro")
        self.val_acc_best = MaxMetric()
        self.clock = DeviceClock()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._forward_net(images)

    # -- training ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.val_acc_best.reset()
        if self.hparams.whitening_init and self.trainer.ckpt_path is None:
            self.clock.start()  # the init is part of training, as airbench counts it
            self._init_whitening()
            self.clock.stop()

    def on_train_start(self) -> None:
        # after the data is on the device: loading is not training time
        self.clock.start()

    def on_train_epoch_start(self) -> None:
        epochs = self.hparams.whiten_bias_epochs
        layer = getattr(self.net, "whiten", None)
        if epochs is not None and layer is not None and layer.bias is not None:
            # airbench: the whitening bias learns the data's offset early, then is frozen
            layer.bias.requires_grad_(self.current_epoch < epochs)

    def on_train_end(self) -> None:
        self.clock.stop()

    def _init_whitening(self) -> None:
        from cifar_lab.recipes.whitening import find_whitening_layer, init_whitening

        layer = find_whitening_layer(self.net)
        datamodule = getattr(self.trainer, "datamodule", None)
        if layer is None or datamodule is None:
            return
        init_whitening(layer, datamodule.train_images(5000, device=self.device))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        # update(), not forward(): no per-batch compute, the epoch value is computed once
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    # -- evaluation ----------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        logits = tta_logits(self, images, self.hparams.tta_level).float()
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

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    # -- optimization --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.net, self.hparams.exclude_norm_and_bias_from_decay, self.hparams.norm_lr_scale)
        optimizer = self.optimizer_factory(params=groups)
        apply_lr_scales(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what predict/eval need to rebuild the model without the training config
        checkpoint["cifar_lab"] = {
            "classes": list(self.hparams.classes),
            "mean": list(self.hparams.mean),
            "std": list(self.hparams.std),
            "model_config": self.hparams.model_config,
        }
