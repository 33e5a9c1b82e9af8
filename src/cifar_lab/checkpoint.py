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

from cifar_lab.checkpoint_io import load_checkpoint as load_checkpoint_dict
from cifar_lab.errors import CheckpointError


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
    checkpoint = load_checkpoint_dict(path)
    extra = checkpoint.get("cifar_lab")
    if not isinstance(extra, dict) or not {"classes", "mean", "std", "model_config"} <= extra.keys():
        raise CheckpointError(
            f"{path} was not written by cifar_lab training (no class names / normalization / model config in it)"
        )
    if not extra["classes"]:
        raise CheckpointError(f"{path} carries no class names")
    return checkpoint


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """The net (eval mode, CPU, trained weights) and what is needed to feed it."""
    from hydra.utils import instantiate

    checkpoint = read_checkpoint(path)
    extra = checkpoint["cifar_lab"]
    classes = [str(c) for c in extra["classes"]]
    try:
        net = instantiate(extra["model_config"])(num_classes=len(classes))
    except Exception as err:  # a model_config this version of cifar_lab cannot build
        raise CheckpointError(f"{path}: cannot rebuild its model ({str(err).splitlines()[0][:200]})") from None
    weights = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
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
