"""The optimizer.* and scheduler.* rules, the one home of each, called by the config check and
by the factories that receive the values (decoupled_sgd, decoupled_muon, the schedules)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cifar_lab.config.values import Rule, check_given, get, is_int, is_number, plain, present, require

# each optimizer.* value's rule, in the order they are checked
RULES: dict[str, Rule] = {
    "lr": (lambda v: is_number(v) and v > 0, "must be a positive number"),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
    "momentum": (lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "muon_momentum": (lambda v: is_number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "muon_lr": (lambda v: is_number(v) and v > 0, "must be > 0 (airbench94_muon: 0.24 at batch 2000)"),
    "ns_steps": (lambda v: is_int(v) and v >= 1, "must be a whole number >= 1 (airbench uses 3)"),
}


def validate_optimizer_options(options: dict[str, Any]) -> None:
    """The optimizer.* values both the config check and the optimizer factories (decoupled_sgd,
    decoupled_muon) rely on: the one home of these rules; a key not given is not checked."""
    check_given(options, "optimizer", RULES)


def check_schedule(values: dict[str, Any]) -> None:
    """The warm-up schedules' shape (torch-free: the config check and cifar_lab.training.optim
    share it); a key not given is not checked (the schedule's default applies)."""
    for key, high in (("warmup_fraction", 1.0), ("initial_factor", None), ("final_factor", None)):
        if key in values:
            value = values[key]
            ok = is_number(value) and value >= 0 and (high is None or value < high)
            span = f"in [0, {high:g})" if high is not None else ">= 0"
            require(ok, f"scheduler.{key}={value!r} must be a number {span}")


def check_milestones(milestones: Any, gamma: Any, warmup_fraction: Any = None) -> None:
    """The step schedule's milestones (fractions of all steps, increasing, after the warm-up, if
    any: None skips that rule) and gamma."""
    values = plain(milestones)
    require(
        isinstance(values, (list, tuple))
        and len(values) > 0
        and all(is_number(m) and 0 < m < 1 for m in values)
        and list(values) == sorted(set(values)),
        f"scheduler.milestones={values!r} must be increasing fractions of training in (0, 1), e.g. [0.3,0.6,0.8]",
    )
    require(is_number(gamma) and 0 < gamma <= 1, f"scheduler.gamma={gamma!r} must be a number in (0, 1]")
    require(
        not is_number(warmup_fraction) or warmup_fraction <= values[0],
        f"scheduler.milestones={list(values)!r} starts inside the warm-up (warmup_fraction={warmup_fraction}): "
        "put the first milestone after it",
    )


def validate_optimization(cfg: DictConfig) -> None:
    """model, optimizer and scheduler: each has a _target_, and the values their factories check."""
    require(get(cfg, "model._target_", None) is not None, "model has no _target_: pick one with model=NAME")
    require(get(cfg, "optimizer._target_", None) is not None, "optimizer has no _target_: pick one with optimizer=NAME")
    lr = get(cfg, "optimizer.lr")  # required: every optimizer takes one
    validate_optimizer_options({**present(cfg, "optimizer", tuple(RULES)), "lr": lr})
    scheduler = get(cfg, "scheduler", None)
    require(
        not scheduler or "_target_" in scheduler,
        "scheduler has no _target_: pick scheduler=warmup_linear, cosine or none",
    )
    if scheduler:
        _check_scheduler(scheduler)


def _check_scheduler(scheduler: DictConfig) -> None:
    """The schedule's values that the config sets (the factory's defaults apply to the others)."""
    check_schedule(
        {key: scheduler[key] for key in ("warmup_fraction", "initial_factor", "final_factor") if key in scheduler}
    )
    if "milestones" in scheduler:
        check_milestones(scheduler.milestones, scheduler.get("gamma"), scheduler.get("warmup_fraction"))
