"""Lightning callbacks for the console and the experiment loggers: one line per epoch for runs
without a progress bar, and what explains a test score (where the errors are, what they look like)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from cifar_lab.recipes.tta import tta_logits
from cifar_lab.training.timing import training_timer

log = logging.getLogger(__name__)


class EpochLog(pl.Callback):
    """One console line per training epoch: the lean recipes' only sign of life.

    speed94 and cpu90 drop the progress bar (its redraws cost per step); without this a CPU
    run prints nothing for 10-30 minutes. The line reads what Lightning already computed for
    the epoch (train/*, and val/* when validation ran): one host read an epoch, and per step
    only Lightning's dispatch of its empty hooks (61 of a speed94 step's 2320 Python calls,
    within the timing noise of benchmarks/step_overhead.py --variant):
    ``epoch 3/13 (step 585/2275)  train/loss 1.4021  train/acc 0.5734  1312 img/s  elapsed 2:10  left ~6:30``.
    Images/s and the time left use the training clock (validation and checkpoints excluded).
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = 0.0
        self._epoch_start: tuple[float, int] = (0.0, 0)  # (training seconds, global step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = (self._training_seconds(trainer), trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds, step = self._training_seconds(trainer), trainer.global_step
        total = int(trainer.estimated_stepping_batches)
        epoch_seconds, epoch_steps = seconds - self._epoch_start[0], step - self._epoch_start[1]
        batch = getattr(trainer.datamodule, "batch_size", None)
        parts = [f"epoch {trainer.current_epoch + 1}/{_epochs(trainer, total)} (step {step}/{total})"]
        metrics = trainer.callback_metrics
        parts += [
            f"{key} {float(metrics[key]):.4f}" for key in ("train/loss", "train/acc", "val/acc") if key in metrics
        ]
        if batch and epoch_seconds > 0:
            parts.append(f"{epoch_steps * batch * trainer.world_size / epoch_seconds:.0f} img/s")
        parts.append(f"elapsed {_clock(time.perf_counter() - self._started)}")
        if 0 < step < total and seconds > 0:
            parts.append(f"left ~{_clock(seconds / step * (total - step))}")
        log.info("  ".join(parts))

    def _training_seconds(self, trainer: pl.Trainer) -> float:
        timer = training_timer(trainer.callbacks)  # validation and checkpoints excluded
        return timer.clock.elapsed() if timer is not None else time.perf_counter() - self._started


class StepLossLog(pl.Callback):
    """``train/loss_step`` every ``trainer.log_every_n_steps`` steps: curves at step resolution.

    ``train/loss`` is an epoch mean (ImageClassifier logs it once an epoch, so a speedrun step
    costs no logging); a large model's few long epochs then draw a handful of points, and
    warm-up or a loss spike stays invisible. This reads the step's loss on the logging steps
    only (one host sync every n steps) and hands it to every logger (rank 0's loss under DDP).
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps or not trainer.loggers or not trainer.is_global_zero:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        for logger in trainer.loggers:
            logger.log_metrics({"train/loss_step": value}, step=step)


def _epochs(trainer: pl.Trainer, total_steps: int) -> str:
    """The run's length in epochs: fractional when max_steps ends it mid-epoch (epochs=9.9)."""
    per_epoch = trainer.num_training_batches
    if not per_epoch or per_epoch == float("inf"):
        return str(trainer.max_epochs)
    epochs = total_steps / per_epoch
    return f"{epochs:.3g}" if epochs != int(epochs) else str(int(epochs))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TestPredictions(pl.Callback):
    """Scores the test split into a torchmetrics report; at test end draws, into every logger that
    takes figures (training.publish), the confusion matrix and a grid of the most confidently
    misclassified images.

    ``ImageClassifier.test_step`` returns its logits, which are used as they are; for a
    module whose test step returns nothing, they are recomputed from the batch (with the
    module's TTA level). After ``trainer.test``, :attr:`results` holds the report of the whole
    split (``training.metrics.test_report``; synced under DDP) and :meth:`misclassified` the most
    confident mistakes (gathered from every rank).
    """

    __test__ = False  # a callback, not a pytest class

    def __init__(self, num_misclassified: int = 32, log_figures: bool = True, ece_bins: int = 15) -> None:
        super().__init__()
        self.num_misclassified = num_misclassified
        self.log_figures = log_figures
        self.ece_bins = ece_bins
        self.report: Any = None  # cifar_lab.training.metrics.test_report, built for the module's classes
        self.results: dict[str, torch.Tensor] = {}  # its values after the test pass
        self._image_shape: tuple[int, ...] = ()
        self._worst: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- collection ----------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._worst, self.report, self.results = [], None, {}

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
        if self.report is None:
            from cifar_lab.training.metrics import test_report

            self.report = test_report(logits.shape[1], self.ece_bins).to(logits.device)
        probs = logits.softmax(-1)
        self.report.update(probs, labels)
        self._image_shape = tuple(images.shape[1:])
        self._keep_worst(images.detach(), probs, labels.detach())

    def _keep_worst(self, images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep only the k most confident mistakes so far: memory stays bounded."""
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
        if self.report is None:  # no test batch
            return
        self.results = {k: v.cpu() for k, v in self.report.compute().items()}  # synced: every rank's shard
        if trainer.world_size > 1:  # every rank calls it (a collective), each with its share's mistakes
            worst = gather_worst(
                trainer.strategy.all_gather,
                self.misclassified(),
                self.num_misclassified,
                self._image_shape,
                pl_module.device,
            )
            self._worst = [worst] if worst is not None else []
        if not self.log_figures or not trainer.is_global_zero:
            return
        from cifar_lab.training.publish import figure_loggers, publish_figure

        loggers = figure_loggers(trainer.loggers)
        if not loggers:
            return
        from cifar_lab.runtime.figures import confusion_figure, misclassified_figure

        classes = _class_names(pl_module, self.results["confusion_matrix"].shape[0])
        step = trainer.global_step
        matrix = confusion_figure(self.results["confusion_matrix"], classes)
        publish_figure(loggers, "test/confusion_matrix", matrix, step)
        if self._worst:
            images, labels, predicted, confidence = self._worst[0]
            pixels = denormalize(images, pl_module.hparams.get("mean"), pl_module.hparams.get("std"))
            figure = misclassified_figure(pixels, labels, predicted, confidence, classes)
            publish_figure(loggers, "test/most_confident_mistakes", figure, step)

    def misclassified(self) -> tuple[torch.Tensor, ...] | None:
        """(images, labels, predicted, confidence) of the most confident mistakes, or None."""
        return self._worst[0] if self._worst else None


def gather_worst(
    all_gather: Any,
    worst: tuple[torch.Tensor, ...] | None,
    k: int,
    image_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, ...] | None:
    """The ``k`` most confident of every rank's (images, labels, predicted, confidence) mistakes.

    Each rank pads its own to ``k`` (confidence -1: no mistake) so that the tensors gathered have
    one shape; ``all_gather`` stacks a tensor from every rank (``trainer.strategy.all_gather``,
    on ``device``: NCCL gathers CUDA tensors only).
    """
    padded = [torch.zeros(k, *image_shape), torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)]
    padded.append(torch.full((k,), -1.0))
    if worst is not None:
        for part, mine in zip(padded, worst):
            part[: len(mine)] = mine
    gathered = [all_gather(part.to(device)).reshape(-1, *part.shape[1:]).cpu() for part in padded]
    order = gathered[3].argsort(descending=True)[:k]
    order = order[gathered[3][order] >= 0]
    return tuple(part[order] for part in gathered) if len(order) else None


def _logits_from(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 2:
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    return None


def _class_names(pl_module: pl.LightningModule, num_classes: int) -> list[str]:
    names = list(pl_module.hparams.get("classes") or ())
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def denormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Normalized (N, C, H, W) back to [0, 1] pixels for display."""
    if mean and std:
        mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
        images = images * std_t + mean_t
    return images.clamp(0, 1)
