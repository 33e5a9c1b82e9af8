"""The eval task: how good is a checkpoint, where does it fail, and can its confidence be trusted.

`python -m cifar_lab.tasks.eval ckpt_path=PATH` (or `python eval.py ...`) writes to its run folder:
metrics.json (test acc/loss/AUROC, expected calibration error, per-class accuracy, the
confusion matrix), confusion_matrix.png, and TensorBoard events (the same scalars, the
confusion matrix and the most confident mistakes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_lab.config.data import validate_data_config
from cifar_lab.config.run import ignored_value, typed_keys
from cifar_lab.errors import CheckpointError, ConfigError, exits_on_user_error
from cifar_lab.instantiate import instantiate_at
from cifar_lab.overrides import overrides_read_first
from cifar_lab.runtime.run_folder import RunFolder, RunStatus
from cifar_lab.tasks.train import config_dir  # importing it registers the cifar_lab.* resolvers

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# data settings eval replaces (below, with open_dict): typed ones would be ignored
_FROM_THE_CHECKPOINT = {
    "data.mean": "eval normalizes with the mean and std the checkpoint was trained with",
    "data.std": "eval normalizes with the mean and std the checkpoint was trained with",
    "data.val_size": "eval scores the whole test split and no validation split",
}


def _ckpt_path(cfg: DictConfig) -> Path:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python eval.py ckpt_path=PATH/TO/checkpoint.ckpt")
    return Path(str(cfg.ckpt_path))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test one checkpoint; write metrics.json and confusion_matrix.png; return the metrics."""
    ckpt_path = _checked_ckpt_path(cfg)
    from cifar_lab.runtime.checkpoints.model import load_trained

    loaded = load_trained(ckpt_path)

    import lightning.pytorch as pl

    from cifar_lab.runtime.hardware import resolved_precision
    from cifar_lab.runtime.logs import route_library_logs_through_hydra
    from cifar_lab.training.callbacks import TestPredictions
    from cifar_lab.training.loggers import build_loggers
    from cifar_lab.training.publish import close_loggers
    from cifar_lab.training.summary import scalar_metrics

    route_library_logs_through_hydra()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = _test_data(cfg, loaded, ckpt_path)
    module = _scoring_module(cfg, loaded)
    predictions = TestPredictions(num_misclassified=int(cfg.num_misclassified), ece_bins=int(cfg.ece_bins))
    loggers, _ = build_loggers(cfg, None)  # a new run in each (MLflow's local store as train's)
    trainer = instantiate_at(
        "trainer",
        cfg.trainer,
        callbacks=[predictions],
        logger=loggers or False,
        enable_checkpointing=False,
        enable_model_summary=False,
        precision=resolved_precision(cfg.trainer),
    )
    finished = False
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
        tested = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")}
        summary = _summary(cfg, ckpt_path, loaded.classes, tested, predictions.results, module.hparams.tta_level)
        if trainer.is_global_zero:
            _write_outputs(RunFolder.of(cfg), summary, predictions.results, loggers, trainer.global_step)
        finished = True
    finally:
        close_loggers(loggers, success=finished)
    lines = per_class_lines(summary["test/acc_per_class"]) + confused_pairs(
        predictions.results["confusion_matrix"], loaded.classes
    )
    log.info(
        "eval: acc %.4f, ece %.4f\n%s", tested.get("test/acc", float("nan")), summary["test/ece"], "\n".join(lines)
    )
    return summary


# up to this many classes the log lists every class; beyond (CIFAR-100) the worst and the best
# few, as 100 lines would bury the rest of the log; metrics.json always holds every class
LISTED_CLASSES = 20
SHOWN_AT_EACH_END = 5


def per_class_lines(per_class: dict[str, float | None], shown: int = SHOWN_AT_EACH_END) -> list[str]:
    """The per-class accuracy table of eval's log: every class, or the ``shown`` worst and best."""
    scored = {name: acc for name, acc in per_class.items() if acc is not None}
    mean = sum(scored.values()) / max(len(scored), 1)
    unscored = len(per_class) - len(scored)
    header = f"per-class test accuracy ({len(per_class)} classes, mean {mean:.3f}"
    header += f", {unscored} without test images)" if unscored else ")"
    width = max((len(name) for name in per_class), default=0)
    if len(per_class) <= LISTED_CLASSES:
        rows = [f"  {name:<{width}}  {'-' if acc is None else f'{acc:.3f}'}" for name, acc in per_class.items()]
        return [f"{header}:", *rows]
    ranked = sorted(scored.items(), key=lambda item: (item[1], item[0]))
    worst, best = ranked[:shown], ranked[::-1][:shown]
    width = max((len(name) for name, _ in worst + best), default=0)
    return [
        f"{header}, the worst and best {shown}; all in metrics.json:",
        *(f"  worst  {name:<{width}}  {acc:.3f}" for name, acc in worst),
        *(f"  best   {name:<{width}}  {acc:.3f}" for name, acc in best),
    ]


def confused_pairs(matrix: torch.Tensor, classes: list[str], shown: int = SHOWN_AT_EACH_END) -> list[str]:
    """The ``shown`` most frequent mistakes (true -> predicted): what a 100-class matrix hides."""
    counts = matrix.clone().long()
    counts.fill_diagonal_(0)
    support = matrix.sum(1)
    values, flat = counts.flatten().topk(min(shown, counts.numel()))
    pairs = [(int(i) // len(classes), int(i) % len(classes), int(v)) for v, i in zip(values, flat) if v > 0]
    if not pairs:
        return []
    return ["most frequent mistakes (true -> predicted):"] + [
        f"  {classes[t]} -> {classes[p]}  {n} ({n / max(int(support[t]), 1):.0%} of {classes[t]})" for t, p, n in pairs
    ]


def _checked_ckpt_path(cfg: DictConfig) -> Path:
    """ckpt_path, after the checks that need no checkpoint (data config, ignored values)."""
    ckpt_path = _ckpt_path(cfg)
    validate_data_config(cfg)  # a missing data.path is one line, before the checkpoint is read
    typed = typed_keys()
    for key, reason in _FROM_THE_CHECKPOINT.items():
        if key in typed:
            raise ignored_value(key, OmegaConf.select(cfg, key), reason, f"drop {key}")
    return ckpt_path


def _test_data(cfg: DictConfig, loaded, ckpt_path: Path):
    """The test split, normalized as the net was trained; one line when its classes differ."""
    from cifar_lab.runtime.checkpoints.model import class_mismatch
    from cifar_lab.training.build import build_datamodule

    with open_dict(cfg):
        # the normalization the net was trained with; only the test split is needed
        cfg.data.mean, cfg.data.std, cfg.data.val_size = loaded.mean, loaded.std, 0
    datamodule = build_datamodule(cfg, stage="test")
    mismatch = class_mismatch(loaded.classes, list(datamodule.classes))
    if mismatch:
        raise CheckpointError(
            f"checkpoint '{ckpt_path}' does not fit this data: {mismatch}; score it on the data it was trained on"
        )
    return datamodule


def _scoring_module(cfg: DictConfig, loaded):
    """An ImageClassifier around the checkpoint's net: its TTA level unless module.tta_level is given."""
    import torch

    from cifar_lab.training.module import ImageClassifier

    hparams = loaded.hparams
    tta_level = cfg.module.get("tta_level")
    return ImageClassifier(
        net=loaded.net,
        optimizer=torch.optim.SGD,  # never used: nothing is trained
        num_classes=len(loaded.classes),
        channels_last=bool(hparams.get("channels_last", False)),
        tta_level=int(hparams.get("tta_level", 0) if tta_level is None else tta_level),
        classes=loaded.classes,
        mean=loaded.mean,
        std=loaded.std,
        model_config=loaded.raw["cifar_lab"]["model_config"],
    )


def _summary(
    cfg: DictConfig,
    ckpt_path: Path,
    classes: list[str],
    tested: dict[str, float],
    report: dict[str, Any],
    tta_level: int,
) -> dict[str, Any]:
    """metrics.json: the module's test metrics plus the report's (torchmetrics)."""
    from cifar_lab.training.metrics import per_class_accuracy

    matrix = report["confusion_matrix"]
    return {
        "kind": "eval",
        "ckpt_path": str(ckpt_path),
        **tested,
        "test/ece": float(report["ece"]),
        "test/acc_per_class": per_class_accuracy(report, classes),
        "confusion_matrix": matrix.tolist(),
        "classes": classes,
        "tta_level": tta_level,
        "num_test": int(matrix.sum()),
        "seed": cfg.seed,
        "status": RunStatus.COMPLETED.value,
    }


def _write_outputs(
    run: RunFolder, summary: dict[str, Any], report: dict[str, Any], loggers: list[Any], step: int
) -> None:
    """confusion_matrix.png, metrics.json, and the scalars for every logger."""
    from cifar_lab.runtime.figures import confusion_figure, png_bytes
    from cifar_lab.runtime.io import atomic_write_bytes

    figure = confusion_figure(report["confusion_matrix"], summary["classes"])
    atomic_write_bytes(run.confusion_plot, png_bytes(figure))
    run.write_metrics(summary)
    per_class = summary["test/acc_per_class"]
    scalars = {
        "test/ece": summary["test/ece"],
        **{f"test/acc_class/{k}": v for k, v in per_class.items() if v is not None},
    }
    for logger in loggers:
        logger.log_metrics(scalars, step=step)
        logger.finalize("success")


@overrides_read_first
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    """`python eval.py ckpt_path=...` and `python -m cifar_lab.tasks.eval ckpt_path=...`."""
    with exits_on_user_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
