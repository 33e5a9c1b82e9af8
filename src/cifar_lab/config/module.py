"""The module.* rules: the LightningModule's options and the tricks' switches, the one home of
each, called by the config check and by the constructor that receives the value (ImageClassifier,
WhiteningInit, FreezeWhiteningBias, compiled)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cifar_lab.config.values import Rule, check_given, is_int, is_number, present

# the views of cifar_lab.recipes.tta.tta_logits; here, so the config is checked before torch loads
TTA_LEVELS = (0, 1, 2)
# module.compile: false, true (torch.compile's default mode) or one of torch.compile's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# each module.* value's rule, in the order they are checked
RULES: dict[str, Rule] = {
    "tta_level": (lambda v: v in TTA_LEVELS, f"is not one of {TTA_LEVELS}"),
    "val_tta_level": (lambda v: v is None or v in TTA_LEVELS, f"is not one of {TTA_LEVELS}, or null (as tta_level)"),
    "norm_lr_scale": (lambda v: is_number(v) and v > 0, "must be a number > 0 (1: the same lr as the rest)"),
    "whitening_eps": (lambda v: is_number(v) and v > 0, "must be a number > 0 (airbench: 5e-4)"),
    "whiten_bias_epochs": (
        lambda v: v is None or (is_int(v) and v >= 0),
        "must be a whole number >= 0, or null (never frozen)",
    ),
    "label_smoothing": (lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "mixup_alpha": (lambda v: is_number(v) and v >= 0, "must be a number >= 0 (0: off; the papers use 1.0 for CIFAR)"),
    "cutmix_alpha": (lambda v: is_number(v) and v >= 0, "must be a number >= 0 (0: off; the papers use 1.0 for CIFAR)"),
    "ema_decay": (
        lambda v: v is None or (is_number(v) and 0 < v < 1),
        "must be in (0, 1), e.g. 0.999 (per step), or null (no EMA)",
    ),
    "compile": (
        lambda v: isinstance(v, bool) or v in COMPILE_MODES,
        f"must be false, true or a torch.compile mode: {', '.join(COMPILE_MODES)}",
    ),
}


def validate_module_options(options: dict[str, Any]) -> None:
    """The module.* values both config checking and the constructors that receive them rely on;
    a key not given is not checked (its owner's default applies)."""
    check_given(options, "module", RULES)


def validate_module_config(cfg: DictConfig) -> None:
    validate_module_options(present(cfg, "module", tuple(RULES)))
