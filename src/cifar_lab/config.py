"""Checks of the composed config, run before any data is touched or any model is built.

Each problem becomes one ConfigError line naming the key, the bad value and a fix, so a
typo costs a second, not a crashed run an hour in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from cifar_lab.errors import ConfigError
from cifar_lab.training.loggers import check_logger_extras

# the views of cifar_lab.recipes.tta.tta_logits; here, so the config is checked before torch loads
TTA_LEVELS = (0, 1, 2)

# horizontal-flip modes of the data loader (cifar_lab.data.augment uses these)
FLIP_MODES = ("none", "random", "alternating")
TRANSLATE_PADDINGS = ("reflect", "zeros")
CUTOUT_MODES = ("inside", "clipped")
# per-image augmentation policies (cifar_lab.data.policy)
POLICIES = ("none", "trivialaugment", "randaugment")
PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
)
TEST_CKPT = ("best", "last")
# module.compile: false, true (torch.compile's default mode) or one of torch.compile's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MATMUL_PRECISIONS = ("highest", "high", "medium")
# training-set sizes of sources whose size is known without reading them
_KNOWN_TRAIN_SIZE: dict[str, Callable[[DictConfig], int | None]] = {
    "cifar_lab.data.sources.TorchvisionCIFAR": lambda src: 50_000,  # CIFAR-10 and CIFAR-100 alike
    "cifar_lab.data.sources.TorchvisionCIFAR10": lambda src: 50_000,
    "cifar_lab.data.sources.SyntheticSource": lambda src: _positive_product(
        src.get("num_classes"), src.get("train_per_class")
    ),
}
# what numpy's and Lightning's seeding accept
MAX_SEED = 2**32 - 1

_MISSING = object()
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_precision(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The fastest sound Lightning precision for training on this CPU.

    bf16 autocast is ~1.8x faster where the CPU computes bf16 natively (AVX512-BF16, AMX);
    elsewhere it is emulated and slower than fp32, so fp32 is the safe answer.
    """
    try:
        flags = Path(cpuinfo_path).read_text(errors="ignore")
    except OSError:  # not Linux: no cheap, torch-free way to know
        return "32-true"
    return "bf16-mixed" if any(flag in flags for flag in _BF16_CPU_FLAGS) else "32-true"


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    torch sizes its thread pool from the cores it sees, which in a container can be the host's;
    more threads than the quota allows thrash instead of helping.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_root, "cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return max(1, count)


def global_batch(per_device: int, devices: Any = 1, num_nodes: Any = 1) -> int:
    """The batch one optimizer step sees across all processes (per-device x devices x nodes).

    ``devices`` may be a count, a list of device ids, or "auto"/-1 (every visible GPU, else 1).
    """
    count = device_count(devices)
    if count is None:
        import torch

        count = max(torch.cuda.device_count(), 1)
    return int(per_device) * count * node_count(num_nodes)


def device_count(devices: Any) -> int | None:
    """The processes per node ``trainer.devices`` asks for; None: "auto"/-1 (every visible GPU, else 1).

    A value that counts no device is one ConfigError here, before anything divides by it."""
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        count = len(devices)
    elif devices in ("auto", -1) and not isinstance(devices, bool):
        return None
    else:
        count = devices if _is_int(devices) else 0
    _require(
        count > 0,
        f"trainer.devices={_plain(devices)!r} must be a positive number of devices, a list of device ids (e.g. [0,1]), or auto",
    )
    return count


def node_count(num_nodes: Any) -> int:
    """``trainer.num_nodes`` (null: 1), refused in one line unless it is a positive integer."""
    if num_nodes is None:
        return 1
    _require(_is_int(num_nodes) and num_nodes > 0, f"trainer.num_nodes={num_nodes!r} must be a positive integer")
    return num_nodes


def run_name(output_dir: str, log_dir: str) -> str:
    """A run's name in MLflow and W&B: its folder below the outputs root (``runs/train/<time>``,
    ``multiruns/train/<time>/3``: a sweep job's number alone would say little), else the folder's name."""
    folder, root = Path(output_dir).resolve(), Path(log_dir).resolve()
    if folder != root and folder.is_relative_to(root):
        return folder.relative_to(root).as_posix()
    return folder.name


for _name, _fn in (
    ("cifar_lab.cpu_precision", cpu_precision),
    ("cifar_lab.global_batch", global_batch),
    ("cifar_lab.run_name", run_name),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _positive_product(*values: Any) -> int | None:
    """The product of positive whole numbers; None when one is not (its constructor says which)."""
    if not all(_is_int(v) and v > 0 for v in values):
        return None
    return math.prod(values)


_ABSENT = object()  # a key the config does not set (the checked code's default applies)


def _get(cfg: DictConfig, key: str, default: Any = _MISSING) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required but not set: add {key}=... to the command line") from None
    except InterpolationResolutionError as err:
        raise ConfigError(f"{key} cannot be resolved: {err}".splitlines()[0]) from None
    if value is _MISSING:
        raise ConfigError(f"{key} is missing from the config")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def crop_stages(crop: Any, crop_epochs: Any) -> tuple[tuple[int, int], ...]:
    """Progressive size as (crop size, epochs) stages, in training order.

    ``crop`` and ``crop_epochs`` are one whole number each (``28``, ``9``: 9 epochs on 28x28
    windows) or lists of equal length (``[24, 28]``, ``[6, 4]``: 6 epochs at 24, then 4 at
    28); full-size images follow. Shared by the config check and the data loader, so both
    accept and refuse the same values.
    """

    def whole_numbers(value: Any, key: str, unit: str) -> list[Any]:
        is_list = isinstance(value, (list, tuple, ListConfig))
        values = list(value) if is_list else [value]
        _require(
            len(values) > 0 and all(_is_int(v) and v >= 0 for v in values),
            f"{key}={values if is_list else value!r} must be a whole number of {unit} >= 0, or a list of them",
        )
        return values

    sizes = whole_numbers(crop, "data.crop", "pixels")
    epochs = whole_numbers(crop_epochs, "data.crop_epochs", "epochs")
    _require(
        len(sizes) == len(epochs),
        f"data.crop has {len(sizes)} size(s) but data.crop_epochs has {len(epochs)} epoch count(s): "
        "give one count per size, e.g. data.crop=[24,28] data.crop_epochs=[6,4]",
    )
    for size, count in zip(sizes, epochs):
        _require(
            count == 0 or size > 0,
            f"data.crop_epochs={count} needs a crop size: set data.crop (e.g. 28), or crop_epochs=0",
        )
    return tuple(zip(sizes, epochs))


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _image_side(source: Any) -> int:
    """The side of the source's images: 32 (CIFAR; folders are resized to it) unless it says."""
    side = source.get("image_size", 32) if isinstance(source, DictConfig) else 32
    return side if _is_int(side) else 32


def _training_epochs(cfg: DictConfig) -> float | None:
    """The run's length in epochs (``epochs``, else ``trainer.max_epochs``); None: set by steps."""
    epochs = _get(cfg, "epochs", None)
    if epochs is not None:
        _require(
            _is_number(epochs) and epochs > 0,
            f"epochs={epochs!r} must be a positive number, fractions allowed (e.g. 9.9), or null for trainer.max_epochs",
        )
        return epochs
    max_epochs = _get(cfg, "trainer.max_epochs", None)
    return max_epochs if _is_int(max_epochs) and max_epochs > 0 else None


def _check_seed(cfg: DictConfig, key: str) -> None:
    seed = _get(cfg, key, None)
    _require(
        seed is None or (_is_int(seed) and 0 <= seed <= MAX_SEED),
        f"{key}={seed!r} must be a whole number from 0 to {MAX_SEED} (what numpy and Lightning accept)",
    )


# the augmentation keys of data.* (AugmentSpec's fields of the same names)
AUGMENT_OPTIONS = (
    "flip",
    "translate",
    "translate_padding",
    "cutout",
    "cutout_mode",
    "policy",
    "policy_ops",
    "policy_magnitude",
)
_DATA_OPTIONS = ("batch_size", "eval_batch_size", "val_size", "flip", "translate", "cutout")


def validate_data_options(options: dict[str, Any]) -> None:
    """The data.* values both the config check and their constructors (CIFARDataModule,
    AugmentSpec) rely on: the one home of these rules; a key not given is not checked."""
    for key in ("batch_size", "eval_batch_size"):
        if key in options:
            value = options[key]
            _require(_is_int(value) and value > 0, f"data.{key}={value!r} must be a positive integer")
    if "val_size" in options:
        val_size = options["val_size"]
        _require(
            _is_int(val_size) and val_size >= 0,
            f"data.val_size={val_size!r} must be a whole number >= 0 (0 turns validation off)",
        )
    if "flip" in options:
        flip = options["flip"]
        _require(flip in FLIP_MODES, f"data.flip={flip!r} is not one of: {', '.join(FLIP_MODES)}")
    for key in ("translate", "cutout"):
        if key in options:
            value = options[key]
            _require(_is_int(value) and value >= 0, f"data.{key}={value!r} must be a whole number of pixels >= 0")
    for key, allowed in (
        ("translate_padding", TRANSLATE_PADDINGS),
        ("cutout_mode", CUTOUT_MODES),
        ("policy", POLICIES),
    ):
        if key in options:
            value = options[key]
            _require(value in allowed, f"data.{key}={value!r} is not one of: {', '.join(allowed)}")
    if "policy_ops" in options:
        ops = options["policy_ops"]
        _require(_is_int(ops) and ops >= 1, f"data.policy_ops={ops!r} must be a whole number >= 1 (RandAugment: 2)")
    if "policy_magnitude" in options:
        magnitude = options["policy_magnitude"]
        _require(
            _is_int(magnitude) and 0 <= magnitude <= 30,
            f"data.policy_magnitude={magnitude!r} must be a whole number from 0 to 30 (RandAugment: 9)",
        )


def validate_data_config(cfg: DictConfig) -> None:
    """The data group's checks alone (eval composes data without a training setup), with the seeds."""
    _check_seed(cfg, "seed")  # first: data.seed is ${seed} unless typed
    _check_seed(cfg, "data.seed")
    validate_data_options({key: _get(cfg, f"data.{key}") for key in _DATA_OPTIONS})
    # the augmentation keys added since (configs saved before may lack them: their defaults apply)
    present = {key: _get(cfg, f"data.{key}", _ABSENT) for key in AUGMENT_OPTIONS if key not in _DATA_OPTIONS}
    validate_data_options({key: value for key, value in present.items() if value is not _ABSENT})
    val_size = _get(cfg, "data.val_size")
    for key in ("data.mean", "data.std"):
        value = _get(cfg, key, None)
        _require(
            value is None or (isinstance(value, ListConfig) and len(value) == 3 and all(_is_number(v) for v in value)),
            f"{key}={_plain(value)!r} must be 3 numbers, one per RGB channel (e.g. [0.5,0.5,0.5]), or null for the training split's",
        )
        if key == "data.std" and value is not None:
            _require(all(v > 0 for v in value), f"data.std={_plain(value)!r} must be > 0 in every channel")
    # crop and crop_epochs default to 0 for configs saved before progressive size existed
    crop_epochs = _get(cfg, "data.crop_epochs", 0)
    stages = crop_stages(_get(cfg, "data.crop", 0), crop_epochs)
    side = _image_side(_get(cfg, "data.source", None))
    cropped = sum(count for size, count in stages if 0 < size < side)  # a crop of the whole image is full size
    total = _training_epochs(cfg)
    _require(
        not cropped or total is None or cropped < total,
        f"data.crop_epochs={_plain(crop_epochs)} covers all {total} training epochs: none would train "
        f"on full-size images, which the BatchNorm statistics and the test pass see; use fewer crop epochs, or data.crop=0",
    )
    source = _get(cfg, "data.source")
    target = source.get("_target_") if isinstance(source, DictConfig) else None
    _require(
        target is not None,
        "data.source needs a _target_ (pick data=cifar10, data=cifar100, data=folder or data=synthetic)",
    )
    if target.endswith("ImageFolderSource"):
        try:
            path = _get(cfg, "data.source.path")
        except ConfigError:
            raise ConfigError(
                "data=folder needs a path: add data.path=PATH (a folder or .tar/.tar.gz/.zip with train/<class>/ and test/<class>/)"
            ) from None
        _require(
            Path(str(path)).expanduser().exists(),
            f"data.path={path!r} does not exist: point it at a folder or archive of train/ and test/ images",
        )
    if target in _KNOWN_TRAIN_SIZE:
        n_train = _KNOWN_TRAIN_SIZE[target](source)
        if n_train is not None:  # None: the source's own constructor refuses its size, naming the key
            _require(
                val_size < n_train,
                f"data.val_size={val_size} is too large: the training split has {n_train} images; use at most {n_train - 1}",
            )


_OPTIMIZER_OPTIONS = ("weight_decay", "momentum", "muon_lr", "muon_momentum", "ns_steps")


def validate_optimizer_options(options: dict[str, Any]) -> None:
    """The optimizer.* values both the config check and the optimizer factories (decoupled_sgd,
    decoupled_muon) rely on: the one home of these rules; a key not given is not checked."""
    if "lr" in options:
        lr = options["lr"]
        _require(_is_number(lr) and lr > 0, f"optimizer.lr={lr!r} must be a positive number")
    if "weight_decay" in options:
        decay = options["weight_decay"]
        _require(_is_number(decay) and decay >= 0, f"optimizer.weight_decay={decay!r} must be a number >= 0")
    for key in ("momentum", "muon_momentum"):
        if key in options:
            value = options[key]
            _require(_is_number(value) and 0 <= value < 1, f"optimizer.{key}={value!r} must be in [0, 1)")
    if "muon_lr" in options:
        muon_lr = options["muon_lr"]
        _require(
            _is_number(muon_lr) and muon_lr > 0,
            f"optimizer.muon_lr={muon_lr!r} must be > 0 (airbench94_muon: 0.24 at batch 2000)",
        )
    if "ns_steps" in options:
        steps = options["ns_steps"]
        _require(
            _is_int(steps) and steps >= 1, f"optimizer.ns_steps={steps!r} must be a whole number >= 1 (airbench uses 3)"
        )


def _validate_optimization(cfg: DictConfig) -> None:
    _require(_get(cfg, "model._target_", None) is not None, "model has no _target_: pick one with model=NAME")
    _require(
        _get(cfg, "optimizer._target_", None) is not None, "optimizer has no _target_: pick one with optimizer=NAME"
    )
    lr = _get(cfg, "optimizer.lr")  # required: every optimizer takes one
    present = {key: _get(cfg, f"optimizer.{key}", _ABSENT) for key in _OPTIMIZER_OPTIONS}
    validate_optimizer_options({"lr": lr, **{key: value for key, value in present.items() if value is not _ABSENT}})
    keys = (
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
    present = {key: _get(cfg, f"module.{key}", _ABSENT) for key in keys}
    validate_module_options({key: value for key, value in present.items() if value is not _ABSENT})
    scheduler = _get(cfg, "scheduler", None)
    _require(
        not scheduler or "_target_" in scheduler,
        "scheduler has no _target_: pick scheduler=warmup_linear, cosine or none",
    )
    if scheduler:
        check_schedule(*(scheduler.get(key, 0.0) for key in ("warmup_fraction", "initial_factor", "final_factor")))
        if "milestones" in scheduler:
            check_milestones(scheduler.milestones, scheduler.get("gamma"), scheduler.get("warmup_fraction", 0.0))


def validate_module_options(options: dict[str, Any]) -> None:
    """The module.* values both config checking and the constructors that receive them rely on:
    the one home of these rules (ImageClassifier, WhiteningInit and FreezeWhiteningBias call it
    for code that builds them directly)."""
    for key in ("tta_level", "val_tta_level"):
        level = options.get(key)
        allowed = "" if key == "tta_level" else ", or null (as tta_level)"
        _require(level is None or level in TTA_LEVELS, f"module.{key}={level!r} is not one of {TTA_LEVELS}{allowed}")
    scale = options.get("norm_lr_scale", 1.0)
    _require(
        _is_number(scale) and scale > 0,
        f"module.norm_lr_scale={scale!r} must be a number > 0 (1: the same lr as the rest)",
    )
    whitening_eps = options.get("whitening_eps", 5e-4)
    _require(
        _is_number(whitening_eps) and whitening_eps > 0,
        f"module.whitening_eps={whitening_eps!r} must be a number > 0 (airbench: 5e-4)",
    )
    bias_epochs = options.get("whiten_bias_epochs")
    _require(
        bias_epochs is None or (_is_int(bias_epochs) and bias_epochs >= 0),
        f"module.whiten_bias_epochs={bias_epochs!r} must be a whole number >= 0, or null (never frozen)",
    )
    smoothing = options.get("label_smoothing", 0.0)
    _require(_is_number(smoothing) and 0 <= smoothing < 1, f"module.label_smoothing={smoothing!r} must be in [0, 1)")
    for key in ("mixup_alpha", "cutmix_alpha"):
        alpha = options.get(key, 0.0)
        _require(
            _is_number(alpha) and alpha >= 0,
            f"module.{key}={alpha!r} must be a number >= 0 (0: off; the papers use 1.0 for CIFAR)",
        )
    decay = options.get("ema_decay")
    _require(
        decay is None or (_is_number(decay) and 0 < decay < 1),
        f"module.ema_decay={decay!r} must be in (0, 1), e.g. 0.999 (per step), or null (no EMA)",
    )
    compile_mode = options.get("compile", False)
    _require(
        isinstance(compile_mode, bool) or compile_mode in COMPILE_MODES,
        f"module.compile={compile_mode!r} must be false, true or a torch.compile mode: {', '.join(COMPILE_MODES)}",
    )


def check_schedule(warmup_fraction: Any, initial_factor: Any, final_factor: Any) -> None:
    """The warm-up schedules' shape (torch-free: the config check and cifar_lab.training.optim share it)."""
    for key, value, high in (
        ("warmup_fraction", warmup_fraction, 1.0),
        ("initial_factor", initial_factor, None),
        ("final_factor", final_factor, None),
    ):
        ok = _is_number(value) and value >= 0 and (high is None or value < high)
        span = f"in [0, {high:g})" if high is not None else ">= 0"
        _require(ok, f"scheduler.{key}={value!r} must be a number {span}")


def check_milestones(milestones: Any, gamma: Any, warmup_fraction: Any = 0.0) -> None:
    """The step schedule's milestones (fractions of all steps, increasing, after the warm-up) and gamma."""
    values = _plain(milestones)
    _require(
        isinstance(values, (list, tuple))
        and len(values) > 0
        and all(_is_number(m) and 0 < m < 1 for m in values)
        and list(values) == sorted(set(values)),
        f"scheduler.milestones={values!r} must be increasing fractions of training in (0, 1), e.g. [0.3,0.6,0.8]",
    )
    _require(_is_number(gamma) and 0 < gamma <= 1, f"scheduler.gamma={gamma!r} must be a number in (0, 1]")
    _require(
        not _is_number(warmup_fraction) or warmup_fraction <= values[0],
        f"scheduler.milestones={list(values)!r} starts inside the warm-up (warmup_fraction={warmup_fraction}): "
        "put the first milestone after it",
    )


def check_freeze(modules: Any, from_epoch: Any) -> None:
    """callbacks.freeze's values (shared with cifar_lab.recipes.freezing, which works without Hydra)."""
    names = _plain(modules)
    _require(
        isinstance(names, list) and len(names) > 0 and all(isinstance(m, str) and m for m in names),
        f"callbacks.freeze.modules={names!r} must be a list of submodule names of the net, e.g. [whiten, layers.0]",
    )
    _require(
        _is_int(from_epoch) and from_epoch >= 0,
        f"callbacks.freeze.from_epoch={from_epoch!r} must be a whole number >= 0",
    )


def check_freeze_fits(from_epoch: int, epochs: float | None) -> None:
    """A freeze must start before the run ends (``epochs`` may be fractional; None: unknown)."""
    if epochs is not None:
        _require(
            from_epoch < math.ceil(epochs),
            f"callbacks.freeze.from_epoch={from_epoch} is not before the end of the {epochs} training epochs, "
            "so nothing would freeze: lower it, or set callbacks.freeze=null",
        )


def _validate_freeze(cfg: DictConfig) -> None:
    freeze = _get(cfg, "callbacks.freeze", None)
    if not freeze:
        return
    check_freeze(freeze.get("modules"), freeze.get("from_epoch"))
    check_freeze_fits(freeze.get("from_epoch"), _training_epochs(cfg))


# what callbacks.early_stopping may watch (logged once per epoch by training.module), and the
# mode each needs; accuracies and AUROC are fractions
EARLY_STOPPING_MONITORS = {
    "val/acc": "max",
    "val/acc_best": "max",
    "val/auroc": "max",
    "val/loss": "min",
    "train/acc": "max",
    "train/loss": "min",
}


def _validate_early_stopping(cfg: DictConfig) -> None:
    """callbacks.early_stopping (Lightning's EarlyStopping): a monitor the run logs, the mode it
    needs, reachable thresholds; refused where the monitor would never be logged (val/* with
    data.val_size=0), rather than failing after the first epoch's training."""
    early = _get(cfg, "callbacks.early_stopping", None)
    if not early:
        return
    key = "callbacks.early_stopping"
    monitor, mode = early.get("monitor"), early.get("mode", "min")
    _require(
        monitor in EARLY_STOPPING_MONITORS,
        f"{key}.monitor={_plain(monitor)!r} is not one of the metrics a run logs: {', '.join(EARLY_STOPPING_MONITORS)}",
    )
    wanted = EARLY_STOPPING_MONITORS[monitor]
    _require(
        mode == wanted, f"{key}.mode={_plain(mode)!r} would stop on the wrong side of {monitor}: use mode={wanted}"
    )
    if str(monitor).startswith("val/") and _get(cfg, "data.val_size") == 0:
        raise ConfigError(
            f"{key}.monitor={monitor} needs validation, but data.val_size=0 turns it off: set data.val_size=N (> 0), "
            f"monitor=train/loss, or leave early stopping off (callbacks/early_stopping=null)"
        )
    for name in ("stopping_threshold", "divergence_threshold"):
        value = early.get(name)
        if value is None:
            continue
        _require(_is_number(value), f"{key}.{name}={_plain(value)!r} must be a number or null")
        if not monitor.endswith("loss"):
            _require(
                0 <= value <= 1,
                f"{key}.{name}={value} can never be crossed: {monitor} is a fraction (0.94 means 94%)",
            )
    patience = early.get("patience", 3)
    _require(
        _is_int(patience) and patience >= 1,
        f"{key}.patience={_plain(patience)!r} must be a whole number of validation epochs >= 1",
    )


def _validate_trainer(cfg: DictConfig) -> None:
    max_epochs = _get(cfg, "trainer.max_epochs", None)
    max_steps = _get(cfg, "trainer.max_steps", -1)
    if not (_is_int(max_steps) and max_steps > 0):
        _require(
            _is_int(max_epochs) and max_epochs > 0,
            f"trainer.max_epochs={max_epochs!r} must be a positive integer (or set trainer.max_steps)",
        )
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    _require(precision in PRECISIONS, f"trainer.precision={precision!r} is not one of: {', '.join(PRECISIONS)}")
    matmul = _get(cfg, "float32_matmul_precision", "highest")
    _require(
        matmul in MATMUL_PRECISIONS,
        f"float32_matmul_precision={matmul!r} is not one of: {', '.join(MATMUL_PRECISIONS)} (torch.set_float32_matmul_precision)",
    )
    test_ckpt = _get(cfg, "test_ckpt", "best")
    _require(test_ckpt in TEST_CKPT, f"test_ckpt={test_ckpt!r} must be 'best' or 'last'")
    device_count(_get(cfg, "trainer.devices", 1))
    node_count(_get(cfg, "trainer.num_nodes", 1))
    accumulate = _get(cfg, "trainer.accumulate_grad_batches", 1)
    _require(  # refused rather than miscounted: every step count here is a batch count
        accumulate == 1 and not isinstance(accumulate, bool),
        f"trainer.accumulate_grad_batches={_plain(accumulate)!r} is not supported (schedules, fractional epochs, "
        f"decoupled lr and images/s count batches as steps): raise data.batch_size or trainer.devices instead",
    )
    threads = _get(cfg, "cpu_threads", None)
    _require(
        threads is None or (_is_int(threads) and threads > 0),
        f"cpu_threads={threads!r} must be a positive integer, or null for one per usable core",
    )
    _validate_resume(cfg)


def _validate_resume(cfg: DictConfig) -> None:
    """Where a run continues from: ckpt_path, resume=latest, step checkpoints."""
    resume, ckpt_path = _get(cfg, "resume", None), _get(cfg, "ckpt_path", None)
    _require(resume in (None, "latest"), f"resume={resume!r} must be null or 'latest' (or give ckpt_path=PATH)")
    every = _get(cfg, "checkpoint_every_n_steps", None)
    _require(
        every is None or (_is_int(every) and every >= 1),
        f"checkpoint_every_n_steps={every!r} must be a positive integer or null",
    )
    _require(not (resume and ckpt_path), "set either resume=latest or ckpt_path=PATH, not both")
    if ckpt_path is not None:
        _require(
            Path(str(ckpt_path)).is_file(),
            f"ckpt_path={ckpt_path!r} is not a file: give the path of a .ckpt to resume from",
        )


def typed_keys() -> set[str]:
    """The keys typed on this command line (Hydra's task overrides, without +/++/~); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {override.lstrip("+~").split("=", 1)[0] for override in HydraConfig.get().overrides.task}


def ignored_value(key: str, value: Any, reason: str, fix: str) -> ConfigError:
    """The one line for a typed value that the task would replace: why, and what to type instead."""
    return ConfigError(f"{key}={_plain(value)!r} would be ignored: {reason}; {fix}")


def _validate_typed(cfg: DictConfig, typed: set[str]) -> None:
    """A typed value that train() replaces (training length, validation settings) stops the run."""
    epochs = _get(cfg, "epochs", None)
    if epochs is not None:
        reason = f"epochs={epochs} sets the training length"
        for key, fix in (
            ("trainer.max_epochs", "use epochs={value} instead"),
            ("trainer.max_steps", "add epochs=null to stop at trainer.max_steps"),
        ):
            value = _get(cfg, key, None)
            if key in typed and value not in (None, -1):
                raise ignored_value(key, value, reason, fix.format(value=value))
    if _get(cfg, "data.val_size") == 0:
        reason = "data.val_size=0 turns validation off"
        for key, unforced in (
            ("trainer.limit_val_batches", 0),
            ("callbacks.model_checkpoint.monitor", None),
            ("callbacks.model_checkpoint.save_top_k", 0),
        ):
            value = _get(cfg, key, None)
            if key in typed and value != unforced and value is not None:
                raise ignored_value(key, value, reason, "set data.val_size=N (> 0) to validate")


LR_FIND_MODES = ("exponential", "linear")
# Lightning's suggestion skips the sweep's first 10 steps and its last one
LR_FIND_MIN_STEPS = 20


def lr_find_range(cfg: DictConfig) -> tuple[float, float]:
    """tune.min_lr and tune.max_lr in optimizer.lr's units (null: optimizer.lr / 1000 and x 100)."""
    lr = _get(cfg, "optimizer.lr")
    low, high = _get(cfg, "tune.min_lr", None), _get(cfg, "tune.max_lr", None)
    low = lr / 1000 if low is None else low
    high = lr * 100 if high is None else high
    for key, value in (("tune.min_lr", low), ("tune.max_lr", high)):
        _require(_is_number(value) and value > 0, f"{key}={_plain(value)!r} must be a positive number")
    _require(low < high, f"tune.min_lr={low:g} must be below tune.max_lr={high:g}")
    return float(low), float(high)


def validate_lr_find(cfg: DictConfig) -> None:
    """tune=lr_find's settings, and what a one-device sweep from a fresh init cannot honour."""
    lr_find_range(cfg)
    steps = _get(cfg, "tune.num_training", 100)
    _require(
        _is_int(steps) and steps >= LR_FIND_MIN_STEPS,
        f"tune.num_training={_plain(steps)!r} must be a whole number >= {LR_FIND_MIN_STEPS} "
        f"(Lightning's suggestion skips the first 10 steps)",
    )
    mode = _get(cfg, "tune.mode", "exponential")
    _require(mode in LR_FIND_MODES, f"tune.mode={_plain(mode)!r} is not one of: {', '.join(LR_FIND_MODES)}")
    threshold = _get(cfg, "tune.early_stop_threshold", None)
    _require(
        threshold is None or (_is_number(threshold) and threshold > 1),
        f"tune.early_stop_threshold={_plain(threshold)!r} must be a number > 1 (a multiple of the best loss) or null",
    )
    devices, nodes = device_count(_get(cfg, "trainer.devices", 1)), node_count(_get(cfg, "trainer.num_nodes", 1))
    _require(
        devices in (1, None) and nodes == 1,
        f"tune=lr_find runs on one device, not trainer.devices={_plain(_get(cfg, 'trainer.devices', 1))!r} x "
        f"trainer.num_nodes={nodes}: add trainer.devices=1 trainer.num_nodes=1 (plain sgd/adamw: with "
        f"data.batch_size = the global batch; sgd_decoupled's lr is per 1024 examples and carries over)",
    )
    dev_run = _get(cfg, "trainer.fast_dev_run", False)
    _require(
        not dev_run,
        f"trainer.fast_dev_run={_plain(dev_run)!r} (debug=default) makes Lightning skip the lr sweep: drop it",
    )
    for key in ("resume", "ckpt_path"):
        value = _get(cfg, key, None)
        _require(
            value is None, f"{key}={_plain(value)!r}: tune=lr_find sweeps from a fresh init, not from a checkpoint"
        )
    _require(
        _get(cfg, "optuna_trial", None) is None,
        "tune=lr_find trains nothing for a search to score: drop hparams_search (or tune=lr_find)",
    )


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first invalid value of the composed training config."""
    for group in ("data", "model", "optimizer", "trainer"):
        _require(_get(cfg, group, None) is not None, f"config group '{group}' is empty: pick one with {group}=NAME")
    validate_data_config(cfg)
    _validate_optimization(cfg)
    _validate_trainer(cfg)
    _validate_freeze(cfg)
    _validate_early_stopping(cfg)
    if _get(cfg, "tune", None) is not None:
        validate_lr_find(cfg)
    _validate_typed(cfg, typed_keys())
    check_logger_extras(cfg)
