"""Lightning callbacks that explain a test score: where the errors are, and what they look like."""

from __future__ import annotations

from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from cifar_lab.recipes.tta import tta_logits


class TestPredictions(pl.Callback):
    """Collects the test split's logits and labels; at test end draws, into TensorBoard,
    the confusion matrix and a grid of the most confidently misclassified images.

    ``ImageClassifier.test_step`` returns its logits, which are used as they are; for a
    module whose test step returns nothing, they are recomputed from the batch (with the
    module's TTA level). ``eval`` reads :attr:`logits`/:attr:`labels` after ``trainer.test``.
    """

    __test__ = False  # a callback, not a pytest class

    def __init__(self, num_misclassified: int = 32, log_figures: bool = True) -> None:
        super().__init__()
        self.num_misclassified = num_misclassified
        self.log_figures = log_figures
        self.logits: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.images: torch.Tensor | None = None  # the top misclassified, normalized (N, C, H, W)
        self._parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._worst: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- collection ----------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts, self._worst = [], []

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, labels = batch
        logits = _logits_from(outputs)
        if logits is None:
            with torch.no_grad():
                logits = tta_logits(pl_module, images, int(pl_module.hparams.get("tta_level", 0)))
        logits = logits.detach().float()
        self._parts.append((logits.cpu(), labels.detach().cpu()))
        self._keep_worst(images.detach(), logits, labels.detach())

    def _keep_worst(self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep only the k most confident mistakes so far: memory stays bounded."""
        probs = logits.softmax(-1)
        confidence, predicted = probs.max(-1)
        wrong = predicted != labels
        if not wrong.any():
            return
        self._worst.append(
            (images[wrong].float().cpu(), labels[wrong].cpu(), predicted[wrong].cpu(), confidence[wrong].cpu())
        )
        merged = [torch.cat(parts) for parts in zip(*self._worst)]
        order = merged[3].argsort(descending=True)[: self.num_misclassified]
        self._worst = [tuple(part[order] for part in merged)]

    # -- results -------------------------------------------------------------------------
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._parts:
            return
        self.logits = torch.cat([p[0] for p in self._parts])
        self.labels = torch.cat([p[1] for p in self._parts])
        self._parts = []
        if not self.log_figures or not trainer.is_global_zero:
            return
        writer = _tensorboard_writer(trainer)
        if writer is None:
            return
        from cifar_lab.figures import confusion_figure, misclassified_figure

        classes = _class_names(pl_module, self.logits.shape[1])
        step = trainer.global_step
        matrix = confusion_matrix(self.logits.argmax(-1), self.labels, len(classes))
        writer.add_figure("test/confusion_matrix", confusion_figure(matrix, classes), global_step=step)
        if self._worst:
            images, labels, predicted, confidence = self._worst[0]
            self.images = images
            pixels = denormalize(images, pl_module.hparams.get("mean"), pl_module.hparams.get("std"))
            figure = misclassified_figure(pixels, labels, predicted, confidence, classes)
            writer.add_figure("test/most_confident_mistakes", figure, global_step=step)
        writer.flush()

    def misclassified(self) -> tuple[torch.Tensor, ...] | None:
        """(images, labels, predicted, confidence) of the most confident mistakes, or None."""
        return self._worst[0] if self._worst else None


def _logits_from(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 2:
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    return None


def _tensorboard_writer(trainer: pl.Trainer) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _class_names(pl_module: pl.LightningModule, num_classes: int) -> list[str]:
    names = list(pl_module.hparams.get("classes") or ())
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted] as an int64 (K, K) tensor."""
    index = labels.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def denormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Normalized (N, C, H, W) back to [0, 1] pixels for display."""
    if mean and std:
        mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
        images = images * std_t + mean_t
    return images.clamp(0, 1)
