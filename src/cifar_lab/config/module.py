"""The module.* rules: the LightningModule's options and the tricks' switches, the one home of
each, called by the config check and by the constructor that receives the value (ImageClassifier,
WhiteningInit, FreezeWhiteningBias, compiled)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cifar_lab.config.values import is_int, is_number, present, require

# the views of cifar_lab.recipes.tta.tta_logits; here, so the config is checked before torch loads
TTA_LEVELS = (0, 1, 2)
# module.compile: false, true (torch.compile's default mode) or one of torch.compile's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CHECKED_OPTIONS = (
    "tta_level",
    "val_tta_level",
    "norm_lr_scale",
    "whitening_eps",
    "whiten_bias_epochs",
    "label_smoothing",
    "mixup_alpha",
    "cutmix_alpha",
    "ema_decay",
    "compile",
)


def validate_module_options(options: dict[str, Any]) -> None:
    """The module.* values both config checking and the constructors that receive them rely on;
    a key not given is not checked (its owner's default applies)."""
    for key in ("tta_level", "val_tta_level"):
        if key in options:
            level = options[key]
            allowed = "" if key == "tta_level" else ", or null (as tta_level)"
            require(
                (level is None and key == "val_tta_level") or level in TTA_LEVELS,
                f"module.{key}={level!r} is not one of {TTA_LEVELS}{allowed}",
            )
    if "norm_lr_scale" in options:
        scale = options["norm_lr_scale"]
        require(
            is_number(scale) and scale > 0,
            f"module.norm_lr_scale={scale!r} must be a number > 0 (1: the same lr as the rest)",
        )
    if "whitening_eps" in options:
        eps = options["whitening_eps"]
        require(is_number(eps) and eps > 0, f"module.whitening_eps={eps!r} must be a number > 0 (airbench: 5e-4)")
    if "whiten_bias_epochs" in options:
        bias_epochs = options["whiten_bias_epochs"]
        require(
            bias_epochs is None or (is_int(bias_epochs) and bias_epochs >= 0),
            f"module.whiten_bias_epochs={bias_epochs!r} must be a whole number >= 0, or null (never frozen)",
        )
    if "label_smoothing" in options:
        smoothing = options["label_smoothing"]
        require(is_number(smoothing) and 0 <= smoothing < 1, f"module.label_smoothing={smoothing!r} must be in [0, 1)")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if key in options:
            alpha = options[key]
            require(
                is_number(alpha) and alpha >= 0,
                f"module.{key}={alpha!r} must be a number >= 0 (0: off; the papers use 1.0 for CIFAR)",
            )
    if "ema_decay" in options:
        decay = options["ema_decay"]
        require(
            decay is None or (is_number(decay) and 0 < decay < 1),
            f"module.ema_decay={decay!r} must be in (0, 1), e.g. 0.999 (per step), or null (no EMA)",
        )
    if "compile" in options:
        mode = options["compile"]
        require(
            isinstance(mode, bool) or mode in COMPILE_MODES,
            f"module.compile={mode!r} must be false, true or a torch.compile mode: {', '.join(COMPILE_MODES)}",
        )


def validate_module_config(cfg: DictConfig) -> None:
    validate_module_options(present(cfg, "module", CHECKED_OPTIONS))
