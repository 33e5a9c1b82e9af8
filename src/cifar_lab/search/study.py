"""The study's parts that the sweeper and each job must build alike: sampler, pruner,
storage, and the trial a job belongs to.

A job finds its trial through the shared storage (its number comes as the override
``+optuna_trial=N``; the study name, storage and pruner from its own ``hydra.sweeper``
config), so a job in another process (SLURM, submitit) needs nothing pickled from the sweeper.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifar_lab.search import SearchConfigError, require_optuna

# the job's config key holding its trial number (the sweeper adds +optuna_trial=N)
TRIAL_KEY = "optuna_trial"
# set on a trial by the job that the pruner stopped; the sweeper then tells PRUNED
PRUNED_ATTR = "pruned_epoch"

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
    "none": "NopPruner",
}


def _options(options: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """The options of ``name`` from a per-name mapping ({tpe: {...}, random: {...}})."""
    from omegaconf import OmegaConf

    if options is None:
        return {}
    plain = OmegaConf.to_container(options, resolve=True) if OmegaConf.is_config(options) else dict(options)
    return dict(plain.get(name) or {})


def _build(kind: str, table: Mapping[str, str], name: Any, options: dict[str, Any]) -> Any:
    optuna = require_optuna()
    name = "none" if name is None or name is False else str(name).lower()
    if name not in table:
        raise SearchConfigError(f"hydra.sweeper.{kind}={name!r} is unknown: choose one of {', '.join(table)}")
    module = optuna.samplers if kind == "sampler" else optuna.pruners
    cls = getattr(module, table[name])
    accepted = inspect.signature(cls).parameters
    bad = [key for key in options if key not in accepted]
    if bad:
        raise SearchConfigError(
            f"hydra.sweeper.{kind}_options.{name}.{bad[0]}: {table[name]} takes no such option "
            f"(it takes {', '.join(p for p in accepted if p != 'self') or 'none'})"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise SearchConfigError(f"hydra.sweeper.{kind}_options.{name}: {err}") from None


def make_sampler(name: Any, options: Mapping[str, Any] | None, seed: int | None) -> Any:
    """The sampler ``name`` with its options; ``seed`` (if the sampler takes one) seeds it."""
    chosen = _options(options, str(name).lower())
    if seed is not None and "seed" not in chosen and str(name).lower() in SAMPLERS:
        chosen["seed"] = seed
    return _build("sampler", SAMPLERS, name, chosen)


def make_pruner(name: Any, options: Mapping[str, Any] | None) -> Any:
    """The pruner ``name`` with its options; ``none`` never prunes."""
    key = "none" if name is None or name is False else str(name).lower()
    return _build("pruner", PRUNERS, name, _options(options, key))


def storage_url(url: Any, cwd: str | Path) -> str:
    """``url`` with a relative sqlite path made absolute from ``cwd`` (a job in another
    process or folder then opens the same file), the file's folder created."""
    if not isinstance(url, str) or not url:
        raise SearchConfigError(
            "hydra.sweeper.storage must be an Optuna storage URL, "
            "e.g. sqlite:///outputs/optuna/study.db (trials of a search are shared through it)"
        )
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        path = Path(url[len(prefix) :])
        path = path if path.is_absolute() else Path(cwd) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def open_storage(url: str) -> Any:
    """The RDB storage at ``url``, or one line saying why it cannot be opened."""
    optuna = require_optuna()
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # a bad URL or driver: SQLAlchemy's many error types
        raise SearchConfigError(
            f"hydra.sweeper.storage: cannot open {url!r} ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        ) from None


def trial_id(storage: Any, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of ``study_name`` (public BaseStorage lookups)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def n_trials(storage: Any, study_name: str) -> int:
    """How many trials ``study_name`` already holds (0 for a new study)."""
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(study_name))
    except KeyError:
        return 0
