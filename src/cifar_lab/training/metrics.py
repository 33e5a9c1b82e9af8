"""The metrics, all torchmetrics: per stage for the LightningModule, and what a test pass reports
beyond accuracy (calibration, the confusion matrix, per-class accuracy).

Under DDP each rank scores its own shard of the validation and test splits
(``CIFARDataModule._eval_loader``) and every metric syncs across ranks when computed
(torchmetrics' default), so each image counts once.
"""

from __future__ import annotations

import torch
from torchmetrics import MaxMetric, MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)


def stage_metrics(num_classes: int) -> dict[str, Metric]:
    """The LightningModule's metrics per stage: loss and accuracy for train/val/test, AUROC for
    val/test (it keeps every score of the epoch: cheap there, skipped for train), and the best
    val accuracy so far (what sweeps optimize).

    No per-update checks: torchmetrics' NaN and argument checks each read a value back to the
    host, a GPU sync every step. Labels come from our own loaders and a NaN loss is caught by
    training.finite.FiniteLossGuard without a sync."""
    metrics: dict[str, Metric] = {}
    for stage in ("train", "val", "test"):
        metrics[f"{stage}_loss"] = MeanMetric(nan_strategy="disable")
        metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
    for stage in ("val", "test"):
        metrics[f"{stage}_auroc"] = MulticlassAUROC(num_classes, average="macro", validate_args=False)
    metrics["val_acc_best"] = MaxMetric()
    return metrics


def test_report(num_classes: int, ece_bins: int = 15) -> MetricCollection:
    """ECE (equal-width confidence bins, L1), counts[true, predicted], and accuracy per class."""
    return MetricCollection(
        {
            "ece": MulticlassCalibrationError(num_classes=num_classes, n_bins=ece_bins, norm="l1"),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes=num_classes),
            "acc_per_class": MulticlassAccuracy(num_classes=num_classes, average=None),
        }
    )


test_report.__test__ = False  # a factory, not a pytest test


def per_class_accuracy(values: dict[str, torch.Tensor], classes: list[str]) -> dict[str, float | None]:
    """{class name: accuracy}, None for a class the test split has no image of."""
    support = values["confusion_matrix"].sum(1)
    accuracy = values["acc_per_class"]
    return {name: (float(accuracy[i]) if support[i] > 0 else None) for i, name in enumerate(classes)}
