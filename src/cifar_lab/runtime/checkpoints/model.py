"""Rebuild a trained net from a cifar_lab checkpoint alone: no training config, no data.

The checkpoint carries ``checkpoint["cifar_lab"] = {classes, mean, std, model_config}``
(written by ``ImageClassifier.on_save_checkpoint``); it is read with
``torch.load(weights_only=True)``, so loading a file never runs code from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from cifar_lab.errors import CheckpointError
from cifar_lab.runtime.checkpoints.files import load_checkpoint
from cifar_lab.training.lightning_internals import saved_loader_states


@dataclass
class LoadedCheckpoint:
    net: nn.Module
    classes: list[str]
    mean: list[float]
    std: list[float]
    hparams: dict[str, Any]
    raw: dict[str, Any]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, safely loaded and checked to be a cifar_lab one (CheckpointError otherwise)."""
    checkpoint = load_checkpoint(path)
    extra = checkpoint.get("cifar_lab")
    if not isinstance(extra, dict) or not {"classes", "mean", "std", "model_config"} <= extra.keys():
        raise CheckpointError(
            f"{path} was not written by cifar_lab training (no class names / normalization / model config in it)"
        )
    if not extra["classes"]:
        raise CheckpointError(f"{path} carries no class names")
    return checkpoint


def load_trained(path: str | os.PathLike) -> LoadedCheckpoint:
    """The net (eval mode, CPU, trained weights) and what is needed to feed it."""
    from hydra.utils import instantiate

    checkpoint = read_checkpoint(path)
    extra = checkpoint["cifar_lab"]
    classes = [str(c) for c in extra["classes"]]
    try:
        net = instantiate(extra["model_config"])(num_classes=len(classes))
    except Exception as err:  # a model_config this version of cifar_lab cannot build
        raise CheckpointError(f"{path}: cannot rebuild its model ({str(err).splitlines()[0][:200]})") from None
    weights = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit its model ({str(err).splitlines()[0][:200]})") from None
    net.eval()
    return LoadedCheckpoint(
        net=net,
        classes=classes,
        mean=[float(v) for v in extra["mean"]],
        std=[float(v) for v in extra["std"]],
        hparams=dict(checkpoint.get("hyper_parameters") or {}),
        raw=checkpoint,
    )


def class_mismatch(theirs: list[str], ours: list[str]) -> str | None:
    """How a checkpoint's classes differ from the data's (count, then names in order); None: they match.

    Shared by resuming and eval: a net scored or trained on other classes gives wrong numbers silently."""
    theirs, ours = [str(c) for c in theirs], [str(c) for c in ours]
    if len(theirs) != len(ours):
        return f"it was trained on {len(theirs)} classes, this data has {len(ours)}"
    if theirs != ours:
        return f"its class names {theirs[:4]}... differ from this data's {ours[:4]}..."
    return None


def check_resumable(checkpoint: dict[str, Any], module, batch_size: int, path: str | os.PathLike) -> None:
    """One CheckpointError line when ``checkpoint`` was trained with another model, data or batch size."""
    problems = _config_differences(checkpoint, module) or _weight_differences(
        checkpoint["state_dict"], module.state_dict()
    )
    for state in saved_loader_states(checkpoint)[:1]:
        if isinstance(state, dict) and state.get("batch_size") not in (None, batch_size):
            problems.append(f"it trained with data.batch_size={state['batch_size']}, this run has {batch_size}")
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this run: {'; '.join(problems)}; resume with the settings it "
            f"was trained with, or start from scratch without ckpt_path/resume"
        )


def _config_differences(checkpoint: dict[str, Any], module) -> list[str]:
    """The model class and the classes the checkpoint records, against this run's."""
    info = checkpoint.get("cifar_lab") or {}
    theirs_model = (info.get("model_config") or {}).get("_target_")
    ours_model = (module.hparams.model_config or {}).get("_target_")
    problems = []
    if theirs_model and ours_model and theirs_model != ours_model:
        problems.append(f"it holds a {_short_target(theirs_model)}, this run builds a {_short_target(ours_model)}")
    theirs_classes = info.get("classes")
    if theirs_classes is not None and (mismatch := class_mismatch(theirs_classes, list(module.hparams.classes))):
        problems.append(mismatch)
    return problems


def _weight_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """The first reshaped, missing or extra tensor (with counts), else nothing."""
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if reshaped:
        k = reshaped[0]
        return [
            f"{k} has shape {list(theirs[k].shape)} there, {list(ours[k].shape)} here ({len(reshaped)} tensors differ)"
        ]
    if missing or unexpected:
        return [
            f"its weights {'lack ' + missing[0] if missing else 'have an extra ' + unexpected[0]} "
            f"({len(missing)} missing, {len(unexpected)} extra)"
        ]
    return []


def _short_target(target: object) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"
