"""The eval task: how good is a checkpoint, where does it fail, and can its confidence be trusted.

`python -m cifar_lab.eval ckpt_path=PATH` (or `python eval.py ...`) writes to its run folder:
metrics.json (test acc/loss/AUROC, expected calibration error, per-class accuracy, the
confusion matrix), confusion_matrix.png, and TensorBoard events (the same scalars, the
confusion matrix and the most confident mistakes).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_lab.config import ignored_value, instantiate_at, typed_keys, validate_data_config  # also registers the cifar_lab.* resolvers
from cifar_lab.errors import CheckpointError, CifarLabError, ConfigError
from cifar_lab.train import config_dir

log = logging.getLogger(__name__)

# data settings eval replaces (below, with open_dict): typed ones would be ignored
_FROM_THE_CHECKPOINT = {
    "data.mean": "eval normalizes with the mean and std the checkpoint was trained with",
    "data.std": "eval normalizes with the mean and std the checkpoint was trained with",
    "data.val_size": "eval scores the whole test split and no validation split",
}


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| x share."""
    import torch

    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1])  # bin i: (e_i, e_{i+1}]
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += float(mask.double().mean() * (correct[mask].mean() - confidence[mask].double().mean()).abs())
    return total


def per_class_accuracy(matrix: Any, classes: list[str]) -> dict[str, float | None]:
    counts = matrix.sum(1)
    return {
        name: (float(matrix[i, i] / counts[i]) if counts[i] > 0 else None) for i, name in enumerate(classes)
    }


def _ckpt_path(cfg: DictConfig) -> Path:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python eval.py ckpt_path=PATH/TO/checkpoint.ckpt")
    return Path(str(cfg.ckpt_path))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test one checkpoint; write metrics.json and confusion_matrix.png; return the metrics."""
    ckpt_path = _ckpt_path(cfg)
    validate_data_config(cfg)  # a missing data.path is one line, before the checkpoint is read
    typed = typed_keys()
    for key, reason in _FROM_THE_CHECKPOINT.items():
        if key in typed:
            raise ignored_value(key, OmegaConf.select(cfg, key), reason, f"drop {key}")
    from cifar_lab.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt_path)

    import lightning.pytorch as pl
    import torch

    from cifar_lab.callbacks import TestPredictions, confusion_matrix
    from cifar_lab.figures import confusion_figure, png_bytes
    from cifar_lab.io import atomic_write_bytes, write_json_atomic
    from cifar_lab.module import ImageClassifier
    from cifar_lab.train import _instantiate_dict, _route_library_logs_through_hydra, build_datamodule, class_mismatch

    _route_library_logs_through_hydra()
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    with open_dict(cfg):
        # the normalization the net was trained with; only the test split is needed
        cfg.data.mean, cfg.data.std, cfg.data.val_size = loaded.mean, loaded.std, 0
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    mismatch = class_mismatch(loaded.classes, list(datamodule.classes))
    if mismatch:
        raise CheckpointError(
            f"checkpoint '{ckpt_path}' does not fit this data: {mismatch}; score it on the data it was trained on"
        )

    hparams = loaded.hparams
    tta_level = cfg.module.get("tta_level")
    tta_level = int(hparams.get("tta_level", 0) if tta_level is None else tta_level)
    module = ImageClassifier(
        net=loaded.net,
        optimizer=torch.optim.SGD,  # never used: nothing is trained
        num_classes=len(loaded.classes),
        channels_last=bool(hparams.get("channels_last", False)),
        whitening_init=False,
        tta_level=tta_level,
        classes=loaded.classes,
        mean=loaded.mean,
        std=loaded.std,
        model_config=loaded.raw["cifar_lab"]["model_config"],
    )
    predictions = TestPredictions(num_misclassified=int(cfg.num_misclassified))
    loggers = _instantiate_dict(cfg.get("logger"), "logger")
    trainer = instantiate_at("trainer", cfg.trainer, callbacks=[predictions], logger=loggers or False,
                          enable_checkpointing=False, enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}

    probs = predictions.logits.softmax(-1)
    labels = predictions.labels
    matrix = confusion_matrix(probs.argmax(-1), labels, len(loaded.classes))
    per_class = per_class_accuracy(matrix, loaded.classes)
    ece = expected_calibration_error(probs, labels, int(cfg.ece_bins))
    summary: dict[str, Any] = {
        "kind": "eval",
        "ckpt_path": str(ckpt_path),
        **tested,
        "test/ece": ece,
        "test/acc_per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": loaded.classes,
        "tta_level": tta_level,
        "num_test": int(len(labels)),
        "seed": cfg.seed,
        "status": "completed",
    }
    if trainer.is_global_zero:
        atomic_write_bytes(output_dir / "confusion_matrix.png", png_bytes(confusion_figure(matrix, loaded.classes)))
        write_json_atomic(output_dir / "metrics.json", summary)
        scalars = {"test/ece": ece, **{f"test/acc_class/{k}": v for k, v in per_class.items() if v is not None}}
        for logger in loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            logger.finalize("success")
    log.info("eval: acc %.4f, ece %.4f, per class %s", tested.get("test/acc", float("nan")), ece,
             {k: round(v, 3) if v is not None else None for k, v in per_class.items()})
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    """`python eval.py ckpt_path=...` and `python -m cifar_lab.eval ckpt_path=...`."""
    try:
        evaluate(cfg)
    except CifarLabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
